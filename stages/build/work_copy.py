"""Work copy and grow: never touch the cached base; enlarge the root partition.

The work copy is written in the output directory under a temporary name (so the final
rename is cheap), copied sparsely (reflink where the file system can). Growing enlarges
the file and partition 2 here; the file system follows in the `open` stage.
"""

from __future__ import annotations

import os

from stages.core.checks import parse_size
from stages.core.config import Config
from stages.core.files import tmp_name
from stages.core.processes import run
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.disk import read_mbr
from stages.image.partitions import grow_last_partition, require_parted


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
