"""What the first-boot tests share: a fake /, /proc and /sys (Tree), a fake clock, a fake
kernel generator on that clock, and one in-process run of the program.

The program's package runs in-process through main.main(), the call the launcher makes, with
seams' functions replaced; ssh-keygen is the real one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from types import ModuleType

PROGRAM = Path(__file__).resolve().parents[1] / "entropi-firstboot"  # the launcher
PACKAGE = PROGRAM.parent / "entropi_firstboot"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
FAST_KEYS = [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}]


class FakeClock:
    """monotonic()/sleep() pair: sleeping advances time and runs hooks."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.hooks = []
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        for hook in self.hooks:
            hook(self)


class FakeKernel:
    """The kernel's generator on the fake clock: the crng becomes ready at ``ready_at``
    (float("inf"): never). getrandom(GRND_NONBLOCK) fails with EAGAIN until then; the
    blocking call (seams.blocking_random) blocks until the main thread's bounded wait
    (seams.wait) has moved the clock to ``ready_at``, which releases it: an event, not a
    sleep. A call still blocked when the test ends is released by ``close``."""

    def __init__(self, clock: FakeClock, ready_at: float) -> None:
        self.clock = clock
        self.ready_at = ready_at
        self.released = threading.Event()
        self.blocking_calls = 0
        self.waits = []

    def getrandom(self, size: int, flags: int) -> bytes:
        assert flags & os.GRND_NONBLOCK, "only the non-blocking probe goes through os.getrandom"
        if self.clock.now < self.ready_at:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return b"\0" * size

    def blocking_random(self, size: int) -> bytes:
        self.blocking_calls += 1
        if self.clock.now < self.ready_at:
            assert self.released.wait(60), "the test never released the blocking call"
        return b"\0" * size

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.waits.append(timeout)
        step = min(timeout, max(0.0, self.ready_at - self.clock.now))
        self.clock.now += step
        if self.clock.now >= self.ready_at:
            self.released.set()
            return event.wait(60)  # the thread returns at once; the bound only catches a hang
        return False

    def close(self) -> None:
        self.released.set()


class Tree:
    """A card's root file system, /proc and /sys under ``base``; the boot partition is
    mounted read-write at <root>/boot/firmware (as /proc/self/mountinfo says)."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.proc = base / "proc"
        self.sys = base / "sys"
        for name in ("etc/ssh", "etc/entropi", "boot/firmware", "var"):
            (self.root / name).mkdir(parents=True)
        (self.root / "etc/hostname").write_text("raspberrypi\n")
        (self.root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
        (self.root / "etc/issue").write_text("Debian GNU/Linux 12 \\n \\l\n\n")
        (self.proc / "sys/kernel/random").mkdir(parents=True)
        (self.proc / "self").mkdir()
        (self.proc / "sys/kernel/osrelease").write_text("6.6.51+rpt-rpi-v8\n")
        (self.proc / "uptime").write_text("12.34 40.00\n")
        (self.proc / "1").mkdir()
        (self.proc / "1/comm").write_text("systemd\n")
        self.set_pool(avail=256, poolsize=256)
        self.set_hwrng("3f104000.rng")
        self.set_boot("rw")
        self.config({"key_types": FAST_KEYS})

    def set_pool(self, avail: int, poolsize: int) -> None:
        (self.proc / "sys/kernel/random/entropy_avail").write_text(f"{avail}\n")
        (self.proc / "sys/kernel/random/poolsize").write_text(f"{poolsize}\n")

    def set_boot(self, state: str) -> None:
        """The boot partition "rw", "ro" (mounted read-only) or "unmounted" (its empty
        directory stays on the root file system, as after a failed mount)."""
        lines = ["22 1 179:2 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw"]
        if state != "unmounted":
            point = str(self.root / "boot/firmware").replace(" ", "\\040")
            lines.append(f"25 22 179:1 / {point} {state},relatime shared:5 - vfat /dev/mmcblk0p1 {state},fmask=0022")
        (self.proc / "self/mountinfo").write_text("\n".join(lines) + "\n")

    def set_hwrng(self, name) -> None:
        base = self.sys / "class/misc/hw_random"
        if name is None:
            shutil.rmtree(str(self.sys / "class"), ignore_errors=True)
            return
        base.mkdir(parents=True, exist_ok=True)
        (base / "rng_available").write_text(name + " \n")
        (base / "rng_current").write_text(name + "\n")

    def start_rngd(self) -> None:
        (self.proc / "345").mkdir()
        (self.proc / "345/comm").write_text("rngd\n")

    def config(self, data) -> None:
        (self.root / "etc/entropi/firstboot.json").write_text(json.dumps(data))

    def args(self):
        return ["--root", str(self.root), "--proc", str(self.proc), "--sys", str(self.sys)]

    @property
    def out(self) -> Path:
        return self.root / "boot/firmware/entropi"

    @property
    def committed(self) -> Path:
        return self.root / "var/lib/entropi/committed.json"

    def key(self, ktype: str) -> Path:
        return self.root / "etc/ssh" / (f"ssh_host_{ktype}_key")

    def pub(self, ktype: str) -> Path:
        return self.root / "etc/ssh" / (f"ssh_host_{ktype}_key.pub")


def run(fb, tree: Tree, capsys):
    """One boot's run: (exit code, verdict, stdout)."""
    code = fb.main.main(tree.args())
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if line.startswith("ENTROPI-FIRSTBOOT ")]
    assert len(verdicts) == 1, "exactly one verdict line expected, got:\n" + out
    verdict = json.loads(verdicts[0][len("ENTROPI-FIRSTBOOT "):])
    return code, verdict, out


def keygen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SSH_KEYGEN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def make_pair(path: Path, ktype: str = "ed25519") -> None:
    result = keygen("-q", "-N", "", "-t", ktype, "-f", str(path))
    assert result.returncode == 0, result.stderr


def assert_sound_pair(private: Path) -> None:
    public = Path(str(private) + ".pub")
    assert private.exists() and public.exists(), f"missing half of {private}"
    assert private.stat().st_size > 0 and public.stat().st_size > 0, f"empty key file {private}"
    assert oct(private.stat().st_mode & 0o777) == "0o600", "private key mode"
    assert oct(public.stat().st_mode & 0o777) == "0o644", "public key mode"
    derived = keygen("-y", "-f", str(private))
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == public.read_text().split()[:2], f"pair mismatch {private}"


def evidence(tree: Tree) -> dict:
    return json.loads((tree.root / "var/log/entropi/firstboot-evidence.json").read_text())


def committed(tree: Tree) -> dict:
    return json.loads(tree.committed.read_text())


def load_script(path: Path) -> ModuleType:
    """A program of this folder that has no .py suffix (entropi-growroot, entropi-tpm-feed), as a module."""
    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
