"""entropi tasks. `invoke --list` is the menu; `invoke --help TASK` explains a task.

Tasks are thin: they parse options, call into stages/, and turn user errors into a
one-line `error: ...` and exit code 2.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from stages.errors import Interrupted, UserError  # noqa: E402

DEFAULT_RECIPE = "pipeline.toml"
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Render UserError as one line with exit code 2; Ctrl-C as exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise Exit(e.render(), code=e.exit_code) from None
        except (KeyboardInterrupt, Interrupted):
            raise Exit("interrupted: nothing half-written was kept", code=130) from None

    return wrapper  # type: ignore[return-value]


def _pytest(c: Context, args: str) -> None:
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task(help={"recipe": "Recipe file (TOML). Default: pipeline.toml"})
@user_errors
def recipe_check(c: Context, recipe: str = DEFAULT_RECIPE) -> None:
    """Validate a recipe and print its resolved settings."""
    from stages.config import load_recipe, resolved_toml

    print(resolved_toml(load_recipe(recipe)))


@task
def recipe_doc(c: Context) -> None:
    """Print every recipe setting with its default and help."""
    from stages.config import describe_settings

    print(describe_settings())


@task(help={"fast": "Unit tests and linters only (seconds, no root).", "k": "Only tests matching this expression."})
def test(c: Context, fast: bool = False, k: str = "") -> None:
    """Run the test suite (all of it: unit, lint, integration, boot)."""
    args = "tests/unit" if fast else "tests"
    if k:
        args += f" -k {k!r}"
    _pytest(c, args)


@task
def lint(c: Context) -> None:
    """Run ruff and mypy (strict on stages/)."""
    _pytest(c, "tests/unit/test_lint.py")


@task(help={"all": "Also remove the cache (~/.cache/entropi): base images and downloads."})
def clean(c: Context, all: bool = False) -> None:
    """Remove out/ and temporary files; with --all also the cache."""
    for path in [ROOT / "out", ROOT / ".pytest_cache", ROOT / ".mypy_cache", ROOT / ".ruff_cache"]:
        if path.exists():
            shutil.rmtree(path)
            print(f"removed {path}")
    if all:
        cache = Path(os.environ.get("ENTROPI_CACHE", Path.home() / ".cache" / "entropi"))
        if cache.exists():
            shutil.rmtree(cache)
            print(f"removed {cache}")


@task(help={"only": "Comma-separated parts to run (default: all of bench/*.py), e.g. fetch,flash."})
def bench(c: Context, only: str = "") -> None:
    """Run the benchmarks in bench/ and print their figures."""
    parts = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
    chosen = [p.strip() for p in only.split(",") if p.strip()] or parts
    unknown = [p for p in chosen if p not in parts]
    if unknown:
        raise Exit(f"error: bench: unknown part {unknown[0]!r} (hint: parts are {', '.join(parts)})", code=2)
    for part in chosen:
        print(f"== bench {part}", flush=True)
        c.run(f"{sys.executable} {ROOT / 'bench' / (part + '.py')}", pty=False)
