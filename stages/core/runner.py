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
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from stages import __version__
from stages.core import progress
from stages.core.config import Config
from stages.core.errors import Interrupted, UserError
from stages.core.files import remove_tree, sha256_file
from stages.core.processes import kill_children, tool_version
from stages.core.state import BuildState


class Stage:
    """One step of a build. Subclasses set ``name`` and override what they need.

    The contract, besides run/teardown: ``reads`` and ``provides`` name the BuildState fields
    the stage uses and sets (a test proves every read is provided earlier in every recipe's
    stage list); ``tools`` lists the host programs it runs, required at preflight and recorded
    in the manifest; ``skip`` says, from the config alone, why it has nothing to do (the
    runner then neither checks nor runs it and records the reason).
    """

    name = "stage"
    reads: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()

    def tools(self, config: Config) -> list[str]:
        """Host programs this stage runs with ``config`` (must be on PATH)."""
        return []

    def skip(self, config: Config) -> str | None:
        """Why the stage has nothing to do with ``config``; None when it runs."""
        return None

    def check(self, ctx: Context) -> None:
        """Preflight: inputs and host setup beyond ``tools``. Raise UserError; change nothing."""

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
    state: BuildState = field(default_factory=BuildState)
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
        settings_origin=dict(ctx.config.origins),
        stages=[],
    )
    ok = False
    t0 = time.monotonic()
    with signals_raise():
        try:
            with progress.step("preflight"):
                skips = preflight(stages, ctx)
            for stage, skipped in zip(stages, skips, strict=True):
                if skipped is not None:
                    ctx.manifest["stages"].append({"name": stage.name, "skipped": skipped})
                    continue
                started.append(stage)
                s0 = time.monotonic()
                with progress.step(stage.name):
                    stage.run(ctx)
                ctx.manifest["stages"].append({"name": stage.name, "seconds": round(time.monotonic() - s0, 3),
                                               "tools": stage.tools(ctx.config)})
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


def preflight(stages: Sequence[Stage], ctx: Context) -> list[str | None]:
    """Ask each stage whether it skips; require the tools of, and check, the others.
    Returns each stage's reason to skip (None: it runs), in order."""
    skips = [stage.skip(ctx.config) for stage in stages]
    for stage, skipped in zip(stages, skips, strict=True):
        if skipped is None:
            require_tools(stage.name, *stage.tools(ctx.config))
            stage.check(ctx)
    return skips


def unprovided_reads(stages: Sequence[Stage], config: Config, initial: BuildState | None = None) -> list[str]:
    """Each state field a stage reads before an earlier stage (or ``initial``) provides it,
    as "stage: field"; skipped stages neither read nor provide. Empty when the order is sound."""
    start = initial if initial is not None else BuildState()
    provided = {f.name for f in fields(start) if getattr(start, f.name) not in (None, [])}
    missing: list[str] = []
    for stage in stages:
        if stage.skip(config) is not None:
            continue
        missing += [f"{stage.name}: {name}" for name in sorted(stage.reads - provided)]
        provided |= stage.provides
    return missing


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
