"""Build stage for ``base.source = "debian"``: the cached Debian-built base (stages/source/debian_base.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

from stages.core.config import Config
from stages.core.runner import Context, Stage
from stages.source.debian_base import BUILD_TOOLS, BaseSpec, ensure_base, sidecar


class BaseImage(Stage):
    """Build stage for ``base.source = "debian"``: make or reuse the cached base image."""

    name = "base image"
    provides = frozenset({"base_image"})

    def tools(self, config: Config) -> list[str]:
        b = config.base
        return [] if BaseSpec(b.arch, b.suite, b.mirror).path().exists() else list(BUILD_TOOLS)

    def run(self, ctx: Context) -> None:
        b = ctx.config.base
        spec = BaseSpec(b.arch, b.suite, b.mirror)
        path = ensure_base(spec)
        ctx.state.base_image = path
        ctx.record("base", "source", "debian")
        ctx.record("base", "spec", asdict(spec))
        info = json.loads(sidecar(path).read_text())
        ctx.record("base", "packages", info["packages"])
        ctx.add_input("base image", path, info["sha256"])
