"""The stage runner: preflight every stage, run them in order, tear down in reverse.

Teardown always runs (after success, an exception, SIGINT or SIGTERM), in reverse order,
for every stage whose ``run`` was entered, and must tolerate a partial run. Temporary
outputs and child processes are removed/killed last. The manifest records what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from stages import __version__, progress
from stages.config import Config
from stages.errors import Interrupted, UserError
from stages.util import kill_children, remove_tree, sha256_file, tool_version


class Stage:
    """One step of a build. Subclasses set ``name`` and override what they need."""

    name = "stage"

    def check(self, ctx: Context) -> None:
        """Preflight: host tools and inputs. Raise UserError; change nothing."""

    def run(self, ctx: Context) -> None:
        """Do the work; record results in ctx.state / ctx.manifest."""

    def teardown(self, ctx: Context) -> None:
        """Undo what run() left open (mounts, handles). Must tolerate a partial run."""


@dataclass
class Context:
    """What a build carries between stages. Config is frozen; results go in state."""

    config: Config
    out_dir: Path
    work_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    temp_paths: list[Path] = field(default_factory=list)

    def temp(self, path: Path) -> Path:
        """Register a path to delete at teardown unless it was renamed away."""
        self.temp_paths.append(path)
        return path

    def record(self, section: str, key: str, value: Any) -> None:
        self.manifest.setdefault(section, {})[key] = value

    def add_input(self, label: str, path: Path, digest: str | None = None) -> None:
        self.manifest.setdefault("inputs", []).append(
            {"label": label, "path": str(path), "sha256": digest or sha256_file(path)}
        )


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into Interrupted in the main thread for the block's duration."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _block_signals() -> Callable[[], None]:
    """Ignore SIGINT/SIGTERM during teardown so a second Ctrl-C cannot cut it short."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


TOOLS: dict[str, Sequence[str]] = {
    "qemu-img": ["qemu-img", "--version"],
    "guestfs": ["/usr/bin/python3", "-c", "import guestfs; g=guestfs.GuestFS(python_return_dict=True); "
                "v=g.version(); print('%d.%d.%d' % (v['major'], v['minor'], v['release']))"],
    "bmaptool": ["bmaptool", "--version"],
    "xz": ["xz", "--version"],
    "zstd": ["zstd", "--version"],
}


def run_stages(stages: Sequence[Stage], ctx: Context, *, manifest_path: Path | None = None) -> dict[str, Any]:
    """Check all, run all, tear down in reverse. Returns the manifest (also written as JSON)."""
    started: list[Stage] = []
    ctx.manifest.update(
        entropi=__version__,
        recipe=str(ctx.config.recipe),
        recipe_sha256=ctx.config.recipe_sha256,
        settings=ctx.config.as_dict(),
        stages=[],
    )
    ok = False
    t0 = time.monotonic()
    with signals_raise():
        try:
            with progress.step("preflight"):
                for stage in stages:
                    stage.check(ctx)
            for stage in stages:
                started.append(stage)
                s0 = time.monotonic()
                with progress.step(stage.name):
                    stage.run(ctx)
                ctx.manifest["stages"].append({"name": stage.name, "seconds": round(time.monotonic() - s0, 3)})
            ok = True
        finally:
            restore = _block_signals()
            try:
                _teardown(started, ctx)
            finally:
                restore()
    ctx.manifest["total_seconds"] = round(time.monotonic() - t0, 3)
    ctx.manifest["tools"] = {name: tool_version(argv) for name, argv in TOOLS.items()}
    if ok and manifest_path is not None:
        write_json_atomic(manifest_path, ctx.manifest)
    return ctx.manifest


def _teardown(started: list[Stage], ctx: Context) -> None:
    errors: list[str] = []
    for stage in reversed(started):
        try:
            stage.teardown(ctx)
        except Exception as e:  # keep tearing down the others
            errors.append(f"{stage.name}: {e}")
    kill_children()
    for path in ctx.temp_paths:
        try:
            if path.is_dir() and not path.is_symlink():
                remove_tree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as e:
            errors.append(f"remove {path}: {e}")
    for line in errors:
        progress.warn(f"teardown: {line}")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def require_tools(where: str, *tools: str) -> None:
    """Preflight helper: every tool must be on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise UserError(where, f"missing host tools: {', '.join(missing)}", hint="run ./ci/setup")
