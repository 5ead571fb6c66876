"""`invoke boot-test --recipe recipes/NAME.toml [ARGS]` as a user runs it, from a scratch directory.

    run = boot_test_command("debian-arm64", tmp_path, "--cards", "B")
    run.report, run.checks["9"], run.out / "debian-arm64.boot-report.md", run.stdout
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


@dataclass(frozen=True)
class BootTestRun:
    stdout: str
    out: Path  # the run's out/ directory
    report: dict[str, Any]
    checks: dict[str, dict[str, Any]]  # by check number, in the report's order


def boot_test_command(recipe: str, cwd: Path, *args: str) -> BootTestRun:
    """Run the task in ``cwd``; it must exit 0 and leave out/RECIPE.boot-report.json."""
    invoke = Path(sys.executable).with_name("invoke")
    done = subprocess.run([str(invoke), "-r", str(ROOT), "boot-test", "--recipe",
                           str(ROOT / "recipes" / f"{recipe}.toml"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=3600)
    print(done.stdout[-4000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-2000:]
    out = cwd / "out"
    report = json.loads((out / f"{recipe}.boot-report.json").read_text())
    return BootTestRun(done.stdout, out, report, {c["number"]: c for c in report["checks"]})
