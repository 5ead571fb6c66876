"""Boot a Raspberry Pi image under QEMU: raspi3b (arm64) or raspi2b (armhf).

Kernel, initramfs, device tree and command line come from the image's own boot partition
(config.txt's ``kernel=`` and ``initramfs``); the command line is adapted for QEMU without
changing the image. The SD card is a qcow2 overlay of power-of-two size over the image,
which stays byte-identical. usb-net forwards 127.0.0.1:<free port> to the guest's sshd.
QEMU is always killed on exit from the ``Machine`` context, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from stages.core.errors import UserError
from stages.core.util import forget, run, spawn
from stages.image.disk import Partition, fat_copy_out, fat_list, fat_read, read_mbr

QEMU = {"arm64": ("qemu-system-aarch64", "raspi3b"), "armhf": ("qemu-system-arm", "raspi2b")}
DTBS = {
    "arm64": ["bcm2710-rpi-3-b.dtb", "bcm2837-rpi-3-b.dtb"],
    "armhf": ["bcm2709-rpi-2-b.dtb", "bcm2836-rpi-2-b.dtb"],
}
DEFAULT_KERNEL = {"arm64": "kernel8.img", "armhf": "kernel7.img"}
# Milestones in the serial log, for timings: (name, pattern)
MILESTONES = [
    ("kernel", re.compile(r"Booting Linux")),
    ("systemd", re.compile(r"systemd\[1\]|Welcome to ")),
    ("firstboot", re.compile(r"ENTROPI-FIRSTBOOT ")),
    ("login", re.compile(r"login: ")),
]
# A boot that cannot go on. Two kinds, told apart by name:
# - emulator faults, each a named pattern with real console lines in the tests: the guest's SD
#   host driver (module "bcm2835", or sdhci) timing out mid-transfer because the emulated board
#   froze for longer than its 10 s timeout (the cause and its fix: BOARD_KERNEL_ARGS), then
#   oopsing in its DMA completion. No real board does this; such a card may be started over,
#   once, on record.
# - everything else that stops a boot is the image's fault until shown otherwise (a wrong
#   PARTUUID, a missing initramfs module): a panic, a device that never appears. Never retried.
# Oopses elsewhere (vchiq finds no VideoCore under QEMU) are routine: the boot goes on.
EMULATOR_FAULTS = {
    "sd-host-timeout": re.compile(r"sdhost-bcm2835 \S+: timeout waiting for hardware interrupt.*"),
    "sd-host-oops": re.compile(r"\w+(?:\+0x[0-9a-f]+/0x[0-9a-f]+)? \[(?:bcm2835|sdhci\w*)\].*"),
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


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path | None
    dtb: Path
    cmdline: str
    boot_part: Partition


BOARD_SECTIONS = {"arm64": ("[all]", "[pi3]"), "armhf": ("[all]", "[pi2]")}


def parse_config_txt(text: str, arch: str) -> tuple[str | None, str | None]:
    """kernel= and initramfs from the parts of config.txt that apply to QEMU's board."""
    kernel = initrd = None
    active = True
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            active = line in BOARD_SECTIONS[arch]
            continue
        if not active:
            continue
        if line.startswith("kernel="):
            kernel = line.split("=", 1)[1].strip()
        elif line.startswith("initramfs "):
            initrd = line.split()[1]
    return kernel, initrd


# Kernel options the boot test adds per board, never written to the image.
# armhf, rodata=off: the ARMv7 kernel invalidates a kernel address range one page at a time
# with broadcast TLB operations (no whole-TLB cut-off, unlike arm64), and it does so for every
# module section it makes read-only or non-executable and for every init section it frees.
# Under QEMU's multi-threaded TCG each broadcast invalidation stops all running vCPU threads;
# with 4 guest cores on 2 host cores each stop waits for the host scheduler, so a range of a
# few thousand pages stalls the whole guest for tens of seconds (kernel log: RCU stall with
# a CPU in v7wbi_flush_kern_tlb_range, called from do_free_init or bpf_prog_free_deferred).
# The SD host driver's 10 s software timeout then fires mid-transfer and its timeout path
# oopses: the "sd-host-timeout" fault. Without the read-only marking there are no such
# ranges to invalidate. Measured here on the armhf base: README "Boots under emulation".
# The kernel's own text and module protection is not what the boot test checks.
BOARD_KERNEL_ARGS = {"arm64": [], "armhf": ["rodata=off"]}


def qemu_cmdline(original: str, arch: str) -> str:
    """The image's cmdline.txt adapted for QEMU: serial console, predictable net names, BOARD_KERNEL_ARGS."""
    added = BOARD_KERNEL_ARGS[arch]
    dropped = ("console=", "net.ifnames=", "quiet", "splash", "plymouth.", *(a.split("=")[0] + "=" for a in added))
    keep = [w for w in original.split() if not w.startswith(dropped)]
    # QEMU's usb-net offers CDC Ethernet and a "Linux Device" interface; when cdc_subset wins
    # the race for it the link stays dead, so only cdc_ether may bind (boot-time option only).
    return " ".join([*keep, "console=ttyAMA0,115200", "net.ifnames=0", "modprobe.blacklist=cdc_subset", *added])


def extract_boot_files(image: Path, arch: str, work: Path) -> BootFiles:
    """Copy kernel, initramfs and device tree out of the image's FAT partition."""
    mbr = read_mbr(image)
    boot = next((p for p in mbr.partitions if p.is_fat), None)
    if boot is None:
        raise UserError(str(image), "no FAT boot partition", hint="a Raspberry Pi image has p1 FAT32 'bootfs'")
    config = fat_read(image, boot, "config.txt").decode(errors="replace")
    cmdline = fat_read(image, boot, "cmdline.txt").decode(errors="replace").strip()
    kernel_name, initrd_name = parse_config_txt(config, arch)
    names = set(fat_list(image, boot))
    kernel_name = kernel_name or DEFAULT_KERNEL[arch]
    if kernel_name not in names:
        raise UserError(str(image), f"config.txt names kernel {kernel_name!r}, not on the boot partition",
                        hint="check kernel= in config.txt")
    dtb_name = next((d for d in DTBS[arch] if d in names), None)
    if dtb_name is None:
        raise UserError(str(image), f"no device tree for QEMU ({' or '.join(DTBS[arch])})",
                        hint="the boot partition must carry the Broadcom device trees")
    work.mkdir(parents=True, exist_ok=True)
    kernel, dtb = work / "kernel", work / "board.dtb"
    fat_copy_out(image, boot, kernel_name, kernel)
    fat_copy_out(image, boot, dtb_name, dtb)
    initrd = None
    if initrd_name and initrd_name in names:
        initrd = work / "initrd"
        fat_copy_out(image, boot, initrd_name, initrd)
    return BootFiles(kernel, initrd, dtb, qemu_cmdline(cmdline, arch), boot)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


@dataclass
class Machine:
    """One QEMU boot of ``disk`` (a qcow2 overlay made by ``overlay``)."""

    files: BootFiles
    disk: Path
    arch: str
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    milestones: dict[str, float] = field(default_factory=dict)

    def argv(self) -> list[str]:
        binary, machine = QEMU[self.arch]
        argv = [binary, "-M", machine, "-m", "1G" if self.arch == "arm64" else "1G",
                "-kernel", str(self.files.kernel), "-dtb", str(self.files.dtb),
                "-append", self.files.cmdline,
                # writethrough: what the guest wrote survives killing QEMU (a power cut), qcow2 metadata too
                "-drive", f"file={self.disk},if=sd,format=qcow2,cache=writethrough",
                "-usb", "-device", "usb-net,netdev=n0",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.log}", "-no-reboot"]
        if self.files.initrd:
            argv[argv.index("-append"):argv.index("-append")] = ["-initrd", str(self.files.initrd)]
        return argv

    def __enter__(self) -> Machine:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        self.proc = spawn(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
        self.started = time.monotonic()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            forget(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def poll_milestones(self) -> None:
        if len(self.milestones) == len(MILESTONES):
            return
        log = self.text()
        for name, pattern in MILESTONES:
            if name not in self.milestones and pattern.search(log):
                self.milestones[name] = round(self.elapsed(), 1)

    def failure(self) -> Failure | None:
        """The console line that shows the boot cannot go on (see ``find_failure``), if any."""
        return find_failure(self.text())

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """Wait until the serial log matches ``pattern``; None on timeout, QEMU exit or a boot failure."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll_milestones()
            text = self.text()
            m = rx.search(text)
            if m:
                return m
            if not self.alive() or find_failure(text):
                return None
            time.sleep(0.5)
        return None

    def qemu_stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.alive():
            return ""
        return self.proc.stderr.read().decode(errors="replace").strip()


RAM_DIR = Path("/dev/shm")
RAM_NEEDED = 2 << 30


@contextlib.contextmanager
def card_dir(work: Path) -> Iterator[Path]:
    """A directory for card overlays, in RAM (tmpfs) when there is room; removed afterwards.

    QEMU's SD card model reads and writes each 512-byte block synchronously while it holds
    the lock every emulated CPU needs, and with cache=writethrough each write is followed by
    an fdatasync: 34,841 of them in one armhf first boot here. On tmpfs they cost nothing
    and do not wait for whatever else the host writes; the writes still outlive a killed QEMU.
    """
    try:
        st = os.statvfs(RAM_DIR)
        in_ram = st.f_bavail * st.f_frsize >= RAM_NEEDED and os.access(RAM_DIR, os.W_OK)
    except OSError:
        in_ram = False
    work.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="entropi-cards-", dir=RAM_DIR if in_ram else work))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_overlay(image: Path, overlay: Path) -> Path:
    """A qcow2 overlay over ``image`` with a power-of-two virtual size (QEMU's SD card rule)."""
    size = next_pow2(image.stat().st_size)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.resolve()), "-F", "raw",
         str(overlay), str(size)])
    return overlay
