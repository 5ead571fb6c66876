"""Boot a Raspberry Pi image under QEMU: raspi3b (arm64) or raspi2b (armhf).

Kernel, initramfs, device tree and command line come from the image (bootfiles.py). The
SD card is a qcow2 overlay of power-of-two size over the image, which stays byte-identical.
usb-net forwards 127.0.0.1:<free port> to the guest's sshd. QEMU is always killed on exit
from the ``Machine`` context, also on Ctrl-C.
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

from stages.boottest.bootfiles import BootFiles
from stages.boottest.faults import Failure, find_failure
from stages.core.processes import forget, run, spawn

QEMU = {"arm64": ("qemu-system-aarch64", "raspi3b"), "armhf": ("qemu-system-arm", "raspi2b")}
# Milestones in the serial log, for timings: (name, pattern)
MILESTONES = [
    ("kernel", re.compile(r"Booting Linux")),
    ("systemd", re.compile(r"systemd\[1\]|Welcome to ")),
    ("firstboot", re.compile(r"ENTROPI-FIRSTBOOT ")),
    ("getty", re.compile(r"login: ")),
]


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
    unseen_at: float = 0.0

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

    def wait_for(self, pattern: str, timeout: float, poll: float = 0.5) -> re.Match[str] | None:
        """Wait until the serial log matches ``pattern``; None on timeout, QEMU exit or a boot failure.
        ``self.unseen_at`` is the monotonic time of the last look that did not find it."""
        rx = re.compile(pattern)
        self.unseen_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll_milestones()
            text = self.text()
            m = rx.search(text)
            if m:
                return m
            if not self.alive() or find_failure(text):
                return None
            self.unseen_at = time.monotonic()
            time.sleep(poll)
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


def overlay(backing: Path, backing_format: str, dest: Path, size: int) -> Path:
    """A qcow2 overlay ``dest`` of ``size`` bytes over ``backing`` (raw or qcow2), which is never written."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing.resolve()), "-F", backing_format,
         str(dest), str(size)], hint="qemu-img (qemu-utils) makes the cards' overlays; run ./ci/setup")
    return dest


def card_bytes(image: Path) -> int:
    """A card strictly larger than the image, of power-of-two size (QEMU's SD card rule)."""
    return next_pow2(image.stat().st_size + 1)


def make_overlay(image: Path, overlay_path: Path) -> Path:
    """A qcow2 overlay over ``image`` with a power-of-two virtual size (QEMU's SD card rule)."""
    return overlay(image, "raw", overlay_path, next_pow2(image.stat().st_size))
