"""Resizing partition 2 of an image file (pyparted), keeping the disk identifier."""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import UserError


def require_parted(where: str) -> None:
    """Preflight: pyparted (Debian's python3-parted) edits the partition table."""
    try:
        import parted  # noqa: F401
    except ImportError:
        raise UserError(where, "pyparted is missing", hint="run ./ci/setup (python3-parted)") from None


def set_root_partition_end(image: Path, size: int | None = None) -> None:
    """Give partition 2 ``size`` bytes from its start (None: up to the file's end), keeping
    the image's disk identifier, which libparted would otherwise rewrite (PARTUUIDs in
    cmdline.txt and fstab depend on it). With a size, the file is cut at the new end."""
    import parted  # Debian's python3-parted

    with open(image, "rb") as f:
        f.seek(440)
        disk_id = f.read(4)
    device = parted.getDevice(str(image))
    disk = parted.newDisk(device)
    part = next(p for p in disk.partitions if p.number == 2)
    start = part.geometry.start
    end = device.length - 1 if size is None else start + size // device.sectorSize - 1
    geometry = parted.Geometry(device=device, start=start, end=end)
    disk.setPartitionGeometry(partition=part, constraint=parted.Constraint(exactGeom=geometry),
                              start=geometry.start, end=geometry.end)
    disk.commitToDevice()
    with open(image, "r+b") as f:
        f.seek(440)
        f.write(disk_id)
        if size is not None:
            f.truncate((end + 1) * device.sectorSize)


def grow_last_partition(image: Path, extra: int) -> None:
    """Append ``extra`` bytes to the image file and extend partition 2 to the end."""
    os.truncate(image, image.stat().st_size + extra)
    set_root_partition_end(image)
