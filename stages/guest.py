"""libguestfs: one handle per build, KVM when it really works, TCG otherwise.

On some hosts /dev/kvm exists but guests fail or hang; so KVM is probed by booting the
host kernel for a few seconds (cached per host boot), and libguestfs is told
``force_tcg`` when the probe fails. The choice is recorded in the manifest.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from stages.errors import UserError
from stages.util import cache_dir

PROBE_SECONDS = 10


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_works() -> bool:
    """True when a KVM guest really runs here (probed once per host boot)."""
    forced = os.environ.get("ENTROPI_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = shutil.which("qemu-system-x86_64")
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if qemu is None or not kernels:
        return False
    probe = cache_dir() / "kvm-probe.json"
    try:
        cached = json.loads(probe.read_text())
        if cached.get("boot_id") == _boot_id():
            return bool(cached["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    argv = [qemu, "-accel", "kvm", "-M", "pc", "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "null", "-kernel", kernels[-1], "-append", "panic=-1"]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=PROBE_SECONDS)
        ok = res.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(json.dumps({"boot_id": _boot_id(), "kvm": ok}))
    return ok


def accel() -> str:
    return "kvm" if kvm_works() else "tcg"


def open_guest(drives: list[tuple[Path, str, bool]], where: str = "image") -> Any:
    """Launch one libguestfs appliance over ``drives`` (path, format, readonly)."""
    try:
        import guestfs  # Debian's python3-guestfs (see ci/setup)
    except ImportError:
        raise UserError(where, "the libguestfs Python bindings are missing",
                        hint="run ./ci/setup (installs python3-guestfs; use .venv/bin/python)") from None
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    g = guestfs.GuestFS(python_return_dict=True)
    if not kvm_works():
        g.set_backend_settings(["force_tcg"])
    g.set_memsize(1024)
    g.set_smp(min(2, os.cpu_count() or 1))
    for path, fmt, readonly in drives:
        g.add_drive_opts(str(path), format=fmt, readonly=readonly)
    try:
        g.launch()
    except RuntimeError as e:
        g.close()
        raise UserError(where, f"libguestfs could not start: {e}",
                        hint="run `libguestfs-test-tool` to see why; ./ci/setup installs what it needs") from None
    return g


class Launch:
    """An appliance started in a thread, so it boots while other work runs (the qemu-user
    package step). ``handle()`` waits for it; ``close()`` is safe at any point."""

    def __init__(self, drives: list[tuple[Path, str, bool]], where: str) -> None:
        import threading

        self._g: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._launch, args=(drives, where), daemon=True)
        self._thread.start()

    def _launch(self, drives: list[tuple[Path, str, bool]], where: str) -> None:
        try:
            self._g = open_guest(drives, where)
        except BaseException as e:  # handed to the caller of handle()
            self._error = e

    def handle(self) -> Any:
        """The launched handle, its block-device caches dropped (the disk may have changed
        under it since it booted), or the launch's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        g = self._g
        self._g = None
        for device in g.list_devices() + g.list_partitions():
            g.blockdev_flushbufs(device)
        g.drop_caches(3)
        return g

    def close(self) -> None:
        self._thread.join()
        if self._g is not None:
            try:
                self._g.close()
            finally:
                self._g = None
