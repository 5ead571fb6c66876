"""Build stage: the verified base image from base.release, base.url or base.path (stages/source/fetch.py)."""

from __future__ import annotations

from typing import Any

from stages.core.runner import Context, Stage
from stages.source.fetch import check_inputs, fetch


class Fetch(Stage):
    """The verified base image from base.release, base.url or base.path (not base.source = "debian")."""

    name = "fetch"
    provides = frozenset({"base_image"})

    def __init__(self, full_verify: bool = False) -> None:
        self.full_verify = full_verify

    def check(self, ctx: Context) -> None:
        check_inputs(ctx.config)

    def run(self, ctx: Context) -> None:
        got = fetch(ctx.config, full_verify=self.full_verify)
        ctx.state.base_image = got.path
        ctx.add_input("base image", got.path, got.sha256)
        p = got.plan
        info: dict[str, Any] = {"source": p.source, "image": str(got.path), "image_sha256": got.sha256,
                                "download_sha256": got.download_sha256}
        if p.url:
            info["url"] = p.url
        if p.release:
            info.update(release=p.release.name, release_date=p.release.release_date, catalog=ctx.config.base.catalog)
        if got.signer:
            info["signed_by"] = got.signer
        ctx.manifest.setdefault("base", {}).update(info)
