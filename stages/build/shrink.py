"""Shrink (image.shrink): the root file system, partition 2 and the file cut to the data.

The root file system is checked and shrunk with resize2fs to its minimum plus
``image.shrink_free``, partition 2 is cut to match (pyparted, the disk identifier kept) and
the file is truncated at its end. The image's own first-boot expansion (Expansion) is left
in place, so a card still grows to its full size at the first boot; an image without one
gets a warning.
"""

from __future__ import annotations

from stages.core import progress
from stages.core.checks import parse_size
from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.processes import run
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.disk import attach_partition, detach_loop, read_mbr
from stages.image.ext4 import fs_geometry, minimum_blocks
from stages.image.partitions import require_parted, set_root_partition_end

MIB = 1 << 20


class Shrink(Stage):
    name = "shrink"
    reads = frozenset({"image", "expansion"})
    provides = frozenset({"shrink_loop"})

    def skip(self, config: Config) -> str | None:
        return None if config.image.shrink else "image.shrink is false"

    def tools(self, config: Config) -> list[str]:
        return ["losetup", "e2fsck", "resize2fs", "dumpe2fs"]

    def check(self, ctx: Context) -> None:
        require_parted("image.shrink")

    def run(self, ctx: Context) -> None:
        image = need(ctx.state.image, "image")
        mbr = read_mbr(image)
        rootp = mbr.partitions[1]
        if any(p.start > rootp.start for p in mbr.partitions[2:]):
            raise UserError(str(image), "partition 2 is not the last partition, so the file cannot end with it",
                            key="image.shrink", hint="set image.shrink = false for this image")
        before = image.stat().st_size
        loop = attach_partition(image, rootp)
        ctx.state.shrink_loop = loop
        with progress.step("check the root file system"):
            done = run(["e2fsck", "-fy", loop], check=False)
            if done.returncode >= 4:
                raise UserError(str(image), f"e2fsck found errors it could not fix (exit {done.returncode})",
                                key="image.shrink", hint="the root file system is damaged; build from a good base")
        expansion = ctx.state.expansion
        if expansion is None:
            progress.warn("image.shrink: the image has no first-boot expansion (image.expand = \"none\"); "
                          "a card keeps the shrunk root size")
        blocks, block_size = fs_geometry(loop)
        free = parse_size(ctx.config.image.shrink_free) if ctx.config.image.shrink_free else 0
        target = min(blocks, minimum_blocks(loop) + -(-free // block_size))
        target -= target % (MIB // block_size)  # whole MiB, so the partition end stays aligned
        if target < blocks:
            with progress.step(f"resize2fs to {target * block_size / MIB:.0f} MiB"):
                run(["resize2fs", loop, str(target)], hint="could not shrink the root file system")
        self.teardown(ctx)
        set_root_partition_end(image, target * block_size)
        ctx.record("image", "shrink", {"file_bytes_before": before, "file_bytes_after": image.stat().st_size,
                                       "root_fs_bytes": target * block_size})

    def teardown(self, ctx: Context) -> None:
        loop, ctx.state.shrink_loop = ctx.state.shrink_loop, None
        detach_loop(loop)
