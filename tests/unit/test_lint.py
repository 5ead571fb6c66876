"""Linters run as tests, so CI fails on them like on a bug."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def test_ruff_finds_nothing() -> None:
    res = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_on_stages_is_clean() -> None:
    res = subprocess.run([*_tool("mypy"), "stages", "tasks.py"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_shell_scripts_parse() -> None:
    for script in ["ci/setup", ".ci/run"]:
        res = subprocess.run([shutil.which("bash") or "bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert res.returncode == 0, f"{script}: {res.stderr}"
