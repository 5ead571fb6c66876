"""What ends a boot, read from the serial console: a named emulator fault or the image's failure."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A boot that cannot go on. Two kinds, told apart by name:
# - emulator faults, each a named pattern with real console lines in the tests: the guest's SD
#   host driver (module "bcm2835", or sdhci) timing out mid-transfer because the emulated board
#   froze for longer than its 10 s timeout (the cause and its fix: bootfiles.BOARD_KERNEL_ARGS),
#   then oopsing in its DMA completion. No real board does this; such a card may be started
#   over, once, on record.
# - everything else that stops a boot is the image's fault until shown otherwise (a wrong
#   PARTUUID, a missing initramfs module): a panic, a device that never appears. Never retried.
#   Also QEMU's USB host controller model (dwc2) losing the emulated network device during
#   enumeration: the kernel retries, then power-cycles the port, and the card has no network
#   for the rest of the boot (seen once in 55 raspi3b boots; the next boot of the same card
#   enumerated it at once).
# Oopses elsewhere (vchiq finds no VideoCore under QEMU) are routine: the boot goes on.
EMULATOR_FAULTS = {
    "sd-host-timeout": re.compile(r"sdhost-bcm2835 \S+: timeout waiting for hardware interrupt.*"),
    "sd-host-oops": re.compile(r"\w+(?:\+0x[0-9a-f]+/0x[0-9a-f]+)? \[(?:bcm2835|sdhci\w*)\].*"),
    "usb-net-lost": re.compile(r"usb usb\d+-port\d+: attempt power cycle"),
}
IMAGE_FAILURES = {
    "kernel-panic": re.compile(r"Kernel panic - .*"),
    "device-timeout": re.compile(r"Timed out waiting for device .*"),
}


@dataclass(frozen=True)
class Failure:
    """The console line that ended a boot, and whose fault it is."""

    name: str
    line: str
    emulator: bool  # a named emulator fault (EMULATOR_FAULTS); False: the image's failure

    def __str__(self) -> str:
        return f"{self.name}: {self.line}"


def find_failure(console: str) -> Failure | None:
    """The first boot-ending line in ``console`` (earliest position wins), classified."""
    found: list[tuple[int, Failure]] = []
    for emulator, table in ((True, EMULATOR_FAULTS), (False, IMAGE_FAILURES)):
        for name, rx in table.items():
            m = rx.search(console)
            if m:
                found.append((m.start(), Failure(name, m.group(0).strip(), emulator)))
    return min(found, key=lambda f: f[0])[1] if found else None
