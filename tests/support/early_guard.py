"""A boot in which the kernel's crng is not ready when entropi's guard starts (for the test of the
entropy wait): on a COPY of a built image, with libguestfs, the kernel is told to run a small
wrapper as init that starts the guard (the unit's ExecStart, entropi-guard) before systemd, and
so before udev loads the hardware RNG's module and before rngd, then hands over to systemd.
Nothing of entropi's is changed; the later boot's own unit then finds the committed set.

The wrapper writes a line to the kernel log (/dev/kmsg) right before the guard starts, so the
console carries the kernel's timestamp of that moment next to its own "crng init done".
"""

from __future__ import annotations

from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle

WRAPPER = "/usr/lib/entropi-boottest/early-guard"
STARTS = "entropi-boottest: the guard starts before systemd"
ENDED = "entropi-boottest: the guard ended"

_SCRIPT = f"""#!/bin/sh
# The boot test's init wrapper: entropi's guard before systemd, then systemd as init.
[ -r /proc/uptime ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
[ -c /dev/kmsg ] || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw /
mount {{boot}} || echo "entropi-boottest: the boot partition did not mount" >/dev/kmsg
echo "{STARTS} (entropy_avail $(cat /proc/sys/kernel/random/entropy_avail))" >/dev/kmsg
/usr/lib/entropi/entropi-guard
echo "{ENDED} (exit $?)" >/dev/kmsg
umount {{boot}}
mount -o remount,ro /
exec /sbin/init "$@"
"""


def guard_before_systemd(g: GuestHandle, boot: str) -> None:
    """init= the wrapper on the card's kernel command line (cmdline.txt, which the boot test reads)."""
    g.mkdir_p(WRAPPER.rsplit("/", 1)[0])
    write_text(g, WRAPPER, _SCRIPT.format(boot=boot), 0o755)
    cmdline = read_text(g, f"{boot}/cmdline.txt").strip()
    # and no seed from the boot loader (QEMU puts one in the device tree) counts as entropy
    write_text(g, f"{boot}/cmdline.txt", f"{cmdline} random.trust_bootloader=off random.trust_cpu=off init={WRAPPER}\n")
