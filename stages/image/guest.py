"""libguestfs: one handle per build, KVM when it really works, TCG otherwise.

On some hosts /dev/kvm exists but guests fail or hang; so KVM is probed by booting the
host kernel for a few seconds (cached per host boot), and libguestfs is told
``force_tcg`` when the probe fails. The choice is recorded in the manifest.

Under TCG the appliance spends seconds unpacking its xz-compressed kernel in emulation, so
the kernel is unpacked once on the host (cached under files.cache_dir()/appliance) and
booted directly through its PVH entry point (QEMU loads such an ELF without a decompressor).
That appliance is cached apart from the system's (/var/tmp/.guestfs-*). Kernels that cannot
be unpacked here, or have no PVH entry, are booted as packaged.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from stages.core.errors import UserError
from stages.core.files import cache_dir
from stages.image.handle import GuestHandle

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


XZ_MAGIC = b"\xfd7zXZ\x00"
XEN_ELFNOTE_PHYS32_ENTRY = 18


def has_pvh_entry(elf: bytes) -> bool:
    """True for a 64-bit little-endian ELF kernel with a Xen PHYS32_ENTRY note (PVH boot)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def unpack_kernel(vmlinuz: bytes) -> bytes | None:
    """The ELF kernel inside an xz-compressed bzImage when it can boot through PVH, else None."""
    start = vmlinuz.find(XZ_MAGIC)
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    except lzma.LZMAError:
        return None
    return elf if has_pvh_entry(elf) else None


def host_kernel() -> Path | None:
    """The highest-versioned /boot/vmlinuz-* with its modules installed (supermin's choice)."""
    kernels = [Path(k) for k in glob.glob("/boot/vmlinuz-*")
               if Path("/lib/modules", k.removeprefix("/boot/vmlinuz-")).is_dir()]
    def version(k: Path) -> list[tuple[int, str]]:
        return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"(\d+)", k.name) if p]

    return max(kernels, key=version) if kernels else None


@functools.lru_cache(maxsize=1)
def appliance_kernel() -> tuple[Path, str] | None:
    """(unpacked kernel, version) for a TCG appliance, cached by the packaged kernel's hash;
    None when the packaged kernel is to be used."""
    if "SUPERMIN_KERNEL" in os.environ or kvm_works():
        return None
    kernel = host_kernel()
    if kernel is None:
        return None
    try:
        packed = kernel.read_bytes()
    except OSError:
        return None
    version = kernel.name.removeprefix("vmlinuz-")
    target = cache_dir() / "appliance" / f"vmlinux-{version}-{hashlib.sha256(packed).hexdigest()[:16]}"
    if not target.is_file():
        elf = unpack_kernel(packed)
        if elf is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_bytes(elf)
        os.replace(tmp, target)
    return target, version


def appliance_setup() -> str:
    """Point supermin at the unpacked kernel (see the module's doc); returns which kernel
    the appliance boots, for the manifest. Call from the main thread: it sets environment
    variables that supermin, started by libguestfs, reads."""
    chosen = appliance_kernel()
    if chosen is None:
        return "packaged"
    kernel, version = chosen
    for name, value in (("SUPERMIN_KERNEL", str(kernel)), ("SUPERMIN_KERNEL_VERSION", version)):
        if os.environ.get(name) != value:
            os.environ[name] = value
    return "unpacked (PVH)"


def open_guest(drives: list[tuple[Path, str, bool]], where: str = "image",
               labels: list[str] | None = None) -> GuestHandle:
    """Launch one libguestfs appliance over ``drives`` (path, format, readonly). With ``labels``
    (one per drive, letters only) each drive is also /dev/disk/guestfs/LABEL in the appliance:
    with many drives the kernel may name them /dev/sdX out of order."""
    try:
        import guestfs  # Debian's python3-guestfs (see ci/setup)
    except ImportError:
        raise UserError(where, "the libguestfs Python bindings are missing",
                        hint="run ./ci/setup (installs python3-guestfs; use .venv/bin/python)") from None
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    g = guestfs.GuestFS(python_return_dict=True)
    if not kvm_works():
        g.set_backend_settings(["force_tcg"])
    if appliance_setup() != "packaged":
        g.set_cachedir(str(cache_dir() / "appliance"))
    g.set_memsize(1024)
    g.set_smp(min(2, os.cpu_count() or 1))
    for index, (path, fmt, readonly) in enumerate(drives):
        named = {"label": labels[index]} if labels else {}
        g.add_drive_opts(str(path), format=fmt, readonly=readonly, **named)
    try:
        g.launch()
    except RuntimeError as e:
        g.close()
        raise UserError(where, f"libguestfs could not start: {e}",
                        hint="run `libguestfs-test-tool` to see why; ./ci/setup installs what it needs") from None
    handle: GuestHandle = g  # the bindings' own methods satisfy the Protocol (tests/unit/test_stage_contract.py)
    return handle


class Launch:
    """An appliance started in a thread, so it boots while other work runs (the qemu-user
    package step). ``handle()`` waits for it; ``close()`` is safe at any point."""

    def __init__(self, drives: list[tuple[Path, str, bool]], where: str) -> None:
        import threading

        self._g: GuestHandle | None = None
        self._error: BaseException | None = None
        appliance_setup()
        self._thread = threading.Thread(target=self._launch, args=(drives, where), daemon=True)
        self._thread.start()

    def _launch(self, drives: list[tuple[Path, str, bool]], where: str) -> None:
        try:
            self._g = open_guest(drives, where)
        except BaseException as e:  # handed to the caller of handle()
            self._error = e

    def handle(self) -> GuestHandle:
        """The launched handle, its caches dropped (the disk may have changed under it since it
        booted), or the launch's error. The guest has only read the disk so far, so its cached
        blocks are clean and drop_caches(3) discards them all, those of the block devices too
        (what blockdev --flushbufs would do, without a command per device)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        g = self._g
        self._g = None
        assert g is not None  # launched without an error
        g.drop_caches(3)
        return g

    def close(self) -> None:
        self._thread.join()
        if self._g is not None:
            try:
                self._g.close()
            finally:
                self._g = None
