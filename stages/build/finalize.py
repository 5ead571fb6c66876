"""Finalise: image, .bmap, compressed copy, .sha256; temporary names renamed when whole."""

from __future__ import annotations

import os
from pathlib import Path

from stages.core import progress
from stages.core.config import Config
from stages.core.files import sha256_file, tmp_name
from stages.core.processes import run
from stages.core.runner import Context, Stage
from stages.core.state import need

COMPRESSORS = {"xz": (".xz", ["xz", "-T0", "-6", "-c"]), "zst": (".zst", ["zstd", "-T0", "-q", "-c", "-10"])}


class Finalize(Stage):
    name = "finalise outputs"
    reads = frozenset({"image"})
    provides = frozenset({"final_image"})

    def tools(self, config: Config) -> list[str]:
        tools = ["bmaptool"] if config.output.bmap else []
        if config.output.compress != "none":
            tools.append(COMPRESSORS[config.output.compress][1][0])
        return tools

    def run(self, ctx: Context) -> None:
        work = need(ctx.state.image, "image")
        name = ctx.config.name
        final = ctx.out_dir / f"{name}.img"
        outputs: dict[str, Path] = {}  # final path -> temporary path
        digest = sha256_file(work)
        outputs[str(final)] = work
        if ctx.config.output.bmap:
            bmap = ctx.temp(tmp_name(ctx.out_dir / f"{name}.img.bmap"))
            with progress.step("bmap"):
                run(["bmaptool", "create", "-o", str(bmap), str(work)])
            outputs[str(ctx.out_dir / f"{name}.img.bmap")] = bmap
        if ctx.config.output.compress != "none":
            suffix, argv = COMPRESSORS[ctx.config.output.compress]
            packed = ctx.temp(tmp_name(ctx.out_dir / f"{name}.img{suffix}"))
            with progress.step(f"compress ({argv[0]})"), open(packed, "wb") as f:
                run([*argv, str(work)], stdout=f)
            outputs[str(ctx.out_dir / f"{name}.img{suffix}")] = packed
        sums = ctx.temp(tmp_name(ctx.out_dir / f"{name}.img.sha256"))
        sums.write_text(f"{digest}  {final.name}\n")
        outputs[str(ctx.out_dir / f"{name}.img.sha256")] = sums
        recorded = {}
        for dest, tmp in outputs.items():
            os.replace(tmp, dest)
            d = digest if dest == str(final) else sha256_file(dest)
            recorded[Path(dest).name] = {"path": dest, "sha256": d, "bytes": os.path.getsize(dest)}
        ctx.manifest["outputs"] = recorded
        ctx.state.final_image = final
