"""The card to flash: what it is (sysfs) and whether it is safe to overwrite (mountinfo).

Every lookup goes through injectable roots (``sysfs``, ``mountinfo``) so tests can fake a
USB card reader, a system disk or a busy device without owning one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import UserError

BLKGETSIZE64 = 0x80081272
# Mount points that mean "this disk runs the computer", not just "something is mounted".
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/boot/firmware", "/usr", "/var", "/home")


@dataclass(frozen=True)
class Device:
    path: Path
    name: str  # kernel name: sdb, mmcblk0, loop3
    size: int  # bytes
    removable: bool
    read_only: bool
    partition: bool
    model: str
    serial: str
    transport: str  # usb, mmc, or ''

    def describe(self) -> str:
        parts = [self.model or "unknown model", human_size(self.size), f"serial {self.serial or 'unknown'}"]
        if self.transport:
            parts.append(self.transport)
        parts.append("removable" if self.removable else "NOT removable")
        return ", ".join(parts)


@dataclass(frozen=True)
class Mount:
    majmin: str
    mountpoint: str
    source: str


def human_size(n: int) -> str:
    return f"{n / 1e9:.1f} GB ({n / (1 << 30):.2f} GiB)" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _block_dir(sysfs: Path, name: str) -> Path:
    return sysfs / "class" / "block" / name


def device_name(target: Path, sysfs: Path) -> str:
    """Kernel name of a block device node, via /sys/dev/block/MAJ:MIN (follows /dev/disk/by-id links)."""
    st = os.stat(target)
    link = sysfs / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if link.exists():
        return link.resolve().name
    return Path(os.path.realpath(target)).name


def _ancestor_file(start: Path, name: str, stop: Path) -> str:
    """The first ``name`` file found walking up from ``start`` (USB serials live on the USB device)."""
    here = start
    while here != stop and stop in here.parents:
        value = _read(here / name)
        if value:
            return value
        here = here.parent
    return ""


def inspect_device(target: Path, sysfs: Path = Path("/sys")) -> Device:
    """What the block device ``target`` is; UserError if it is not a block device."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise UserError(str(target), "no such device",
                        hint="is the card reader plugged in? `lsblk` lists disks; "
                             "to write an image file instead pass --to-file") from None
    if not stat.S_ISBLK(st.st_mode):
        raise UserError(str(target), "not a block device",
                        hint="give the card's device, e.g. /dev/sdX or /dev/mmcblkN; to write a file pass --to-file")
    name = device_name(target, sysfs)
    bdir = _block_dir(sysfs, name)
    if not bdir.is_dir():
        raise UserError(str(target), f"no sysfs entry for {name} under {sysfs}", hint="is sysfs mounted?")
    real = bdir.resolve()
    sectors = _read(bdir / "size")
    size = int(sectors) * 512 if sectors.isdigit() else _ioctl_size(target)
    mmc_type = _read(bdir / "device" / "type")
    removable = _read(bdir / "removable") == "1" or (name.startswith("mmcblk") and mmc_type == "SD")
    transport = "usb" if "/usb" in str(real) else "mmc" if name.startswith("mmcblk") else ""
    model = " ".join(filter(None, [_read(bdir / "device" / "vendor"),
                                   _read(bdir / "device" / "model") or _read(bdir / "device" / "name")]))
    serial = _read(bdir / "device" / "serial") or _ancestor_file(real, "serial", sysfs.resolve())
    return Device(path=target, name=name, size=size, removable=removable, read_only=_read(bdir / "ro") == "1",
                  partition=(bdir / "partition").exists(), model=model, serial=serial, transport=transport)


def _ioctl_size(target: Path) -> int:
    fd = os.open(target, os.O_RDONLY)
    try:
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("<Q", buf)[0])
    finally:
        os.close(fd)


def family(name: str, sysfs: Path = Path("/sys")) -> dict[str, str]:
    """The device, its partitions, and everything stacked on them (holders, loop devices): name -> MAJ:MIN."""
    found: dict[str, str] = {}
    todo = [name]
    loops = {p.parent.parent.name: _read(p).removesuffix(" (deleted)")
             for p in (sysfs / "class" / "block").glob("*/loop/backing_file")}
    while todo:
        cur = todo.pop()
        if cur in found:
            continue
        bdir = _block_dir(sysfs, cur)
        found[cur] = _read(bdir / "dev")
        if bdir.is_dir():
            todo += [p.name for p in bdir.iterdir() if (p / "partition").exists()]
            todo += [p.name for p in (bdir / "holders").glob("*")]
        todo += [loop for loop, backing in loops.items() if backing == f"/dev/{cur}"]
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(fields[2], _unescape(fields[4]), _unescape(tail[1])))
    return mounts


def users(name: str, sysfs: Path = Path("/sys"),
          mountinfo: Path = Path("/proc/self/mountinfo")) -> list[tuple[str, str]]:
    """(device, mount point) for every mount of ``name``, its partitions or what is stacked on them."""
    members = family(name, sysfs)
    majmins = {v: k for k, v in members.items() if v}
    sources = {f"/dev/{k}": k for k in members}
    try:
        text = mountinfo.read_text()
    except OSError as e:
        raise UserError(str(mountinfo), f"cannot read the mount table: {e.strerror}",
                        hint="run on Linux with /proc mounted") from None
    hits = []
    for m in parse_mountinfo(text):
        who = majmins.get(m.majmin) or sources.get(m.source)
        if who:
            hits.append((who, m.mountpoint))
    return hits


def refuse_unsafe(dev: Device, image_size: int | None, *, force_non_removable: bool,
                  sysfs: Path = Path("/sys"), mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
    """Raise UserError, with one line of reason, unless ``dev`` may be overwritten with the image."""
    where = str(dev.path)
    if dev.partition:
        raise UserError(where, f"{dev.name} is a partition, not a whole card",
                        hint="give the whole device (e.g. /dev/sdb, not /dev/sdb1)")
    hits = users(dev.name, sysfs, mountinfo)
    system = [(who, mp) for who, mp in hits if mp in SYSTEM_MOUNTS]
    if system:
        who, mp = system[0]
        raise UserError(where, f"holds the running system ({mp} is mounted from {who})",
                        hint="this is the computer's own disk: pick the SD card (see `lsblk`)")
    if hits:
        who, mp = hits[0]
        raise UserError(where, f"is mounted ({who} at {mp})", hint=f"unmount it first: umount {mp}")
    stacked = [n for n in family(dev.name, sysfs)
               if n != dev.name and not (_block_dir(sysfs, n) / "partition").exists()]
    if stacked:
        raise UserError(where, f"is in use by {stacked[0]} (device-mapper, RAID, encryption or a loop device)",
                        hint=f"release it first (see `lsblk /dev/{dev.name}`, `losetup -a`)")
    if not dev.removable and not force_non_removable:
        raise UserError(where, f"{dev.name} is not a removable device ({dev.describe()})",
                        hint="SD card readers are removable; if you are sure, pass --force-non-removable")
    if dev.read_only:
        raise UserError(where, "is read-only", hint="slide the SD card's lock switch to unlocked")
    if dev.size == 0:
        raise UserError(where, "has no medium (size 0)", hint="insert the card")
    if image_size is not None and dev.size < image_size:
        raise UserError(where, f"is too small: {human_size(dev.size)} < image {human_size(image_size)}",
                        hint="use a larger card")


def open_exclusive(target: Path, flags: int = os.O_WRONLY) -> int:
    """Open a block device with O_EXCL: the kernel refuses if anything has it (or a partition) claimed."""
    try:
        return os.open(target, flags | os.O_EXCL | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise UserError(str(target), "is busy (mounted, swap, or held by another device)",
                            hint="unmount or release it first (see `lsblk` and /proc/swaps)") from None
        if e.errno == errno.EROFS:  # a lock switch the reader did not report in sysfs
            raise UserError(str(target), "is read-only: it cannot be opened for writing",
                            hint="slide the SD card's lock switch to unlocked") from None
        raise UserError(str(target), f"cannot open: {e.strerror}", hint="run as root (sudo)") from None


def settle(target: Path) -> None:
    """Flush what was written to ``target`` and forget its cached pages: the next read comes from the card."""
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
