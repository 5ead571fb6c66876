"""Copy overlays/boot and overlays/rootfs (and the recipe's overlays.extra) into the image."""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import UserError
from stages.core.paths import OVERLAYS
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.guest_files import put_file

BUILTIN = OVERLAYS  # the repository's overlays/
SKIP = {".gitkeep", "README.md"}


def overlay_trees(ctx: Context) -> list[Path]:
    trees = [BUILTIN] if ctx.config.overlays.builtin else []
    return trees + [Path(p) for p in ctx.config.overlays.extra]


class Overlays(Stage):
    name = "overlays"
    reads = frozenset({"g", "boot_mount"})

    def check(self, ctx: Context) -> None:
        for tree in overlay_trees(ctx):
            if not tree.is_dir():
                raise UserError(str(ctx.config.recipe), f"overlay directory {tree} does not exist",
                                key="overlays.extra", hint="give directories holding boot/ and/or rootfs/")

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        copied = []
        for tree in overlay_trees(ctx):
            for sub, dest in (("boot", need(ctx.state.boot_mount, "boot_mount")), ("rootfs", "")):
                top = tree / sub
                if not top.is_dir():
                    continue
                for dirpath, _dirs, files in os.walk(top):
                    rel = Path(dirpath).relative_to(top)
                    target_dir = f"{dest}/{rel}".rstrip("/.") if str(rel) != "." else (dest or "/")
                    g.mkdir_p(target_dir)
                    for name in files:
                        if name in SKIP and tree == BUILTIN:
                            continue
                        src = Path(dirpath) / name
                        target = f"{target_dir.rstrip('/')}/{name}"
                        put_file(g, src, target, src.stat().st_mode & 0o7777 if sub == "rootfs" else None)
                        copied.append(target)
        ctx.record("overlays", "files", copied)
