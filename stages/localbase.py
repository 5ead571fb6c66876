"""`base.source = "path"`: a local raw image, its SHA-256 checked when the recipe gives one."""

from __future__ import annotations

from pathlib import Path

from stages.errors import UserError
from stages.runner import Context, Stage
from stages.util import sha256_file


class LocalBase(Stage):
    name = "local base image"
    provides = frozenset({"base_image"})

    def check(self, ctx: Context) -> None:
        path = Path(ctx.config.base.path)
        if not path.is_file():
            raise UserError(str(ctx.config.recipe), f"no such file: {path}", key="base.path",
                            hint="point base.path at a raw .img file (relative to the recipe)")
        if path.suffix in (".xz", ".gz", ".zst", ".zip", ".bz2"):
            raise UserError(str(ctx.config.recipe), f"{path.name} is compressed", key="base.path",
                            hint="unpack it first (xz -dk / unzstd), or use base.url to let entropi unpack it")

    def run(self, ctx: Context) -> None:
        path = Path(ctx.config.base.path)
        digest = sha256_file(path)
        want = ctx.config.base.sha256
        if want and digest != want:
            raise UserError(str(ctx.config.recipe), f"SHA-256 mismatch for {path.name}: expected {want}, got {digest}",
                            key="base.sha256", hint="the file is not the image the recipe pins")
        ctx.state.base_image = path
        ctx.record("base", "source", "path")
        ctx.add_input("base image", path, digest)
