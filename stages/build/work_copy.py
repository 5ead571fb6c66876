"""Work copy and grow: never touch the cached base; enlarge the root partition (pyparted).

The work copy is written in the output directory under a temporary name (so the final
rename is cheap), copied sparsely (reflink where the file system can). Growing enlarges
the file and partition 2 here; the file system follows in the `open` stage.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.config import Config, parse_size
from stages.core.errors import UserError
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.core.util import run, tmp_name
from stages.image.disk import read_mbr


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


class WorkCopy(Stage):
    name = "work copy"
    reads = frozenset({"base_image"})
    provides = frozenset({"image", "grown"})

    def tools(self, config: Config) -> list[str]:
        return ["cp"]

    def check(self, ctx: Context) -> None:
        if ctx.config.image.grow:
            require_parted("image.grow")

    def run(self, ctx: Context) -> None:
        base = need(ctx.state.base_image, "base_image")
        work = ctx.temp(tmp_name(ctx.out_dir / f"{ctx.config.name}.img"))
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        run(["cp", "--sparse=always", "--reflink=auto", str(base), str(work)])
        os.chmod(work, 0o644)
        ctx.state.image = work
        if ctx.config.image.grow:
            extra = parse_size(ctx.config.image.grow)
            before = read_mbr(work).partitions[1].size
            grow_last_partition(work, extra)
            after = read_mbr(work).partitions[1].size
            ctx.record("image", "root_partition_bytes", {"before": before, "after": after})
            ctx.state.grown = True
