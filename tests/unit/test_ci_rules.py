"""Under CI=true a skipped integration or boot test fails the run; unit skips stay skips.
Every run prints the tests per marker and the timing table (real pytest in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SUITE = """
import pytest

@pytest.mark.integration
def test_integration_without_its_tool():
    pytest.skip("missing host tools: mmdebstrap")

@pytest.mark.boot
def test_boot_that_runs():
    pass

def test_unit_that_skips():
    pytest.skip("not here")
"""


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ENTROPI_SETUP_SECONDS")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(ROOT), "-p", "no:cacheprovider", str(tmp_path / "test_sample.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_skipped_integration_test_fails(tmp_path: Path, ci: str) -> None:
    res = _run(tmp_path, ci)
    assert res.returncode == 1, res.stdout
    assert "CI=true: a skipped integration test is a failure (Skipped: missing host tools: mmdebstrap)" in res.stdout
    assert "1 failed, 1 passed, 1 skipped" in res.stdout


def test_outside_ci_it_skips_with_its_reason(tmp_path: Path) -> None:
    res = _run(tmp_path, None)
    assert res.returncode == 0, res.stdout
    assert "missing host tools: mmdebstrap" in res.stdout and "1 passed, 2 skipped" in res.stdout


def test_the_run_ends_with_counts_per_marker_and_a_timing_table(tmp_path: Path) -> None:
    out = _run(tmp_path, "true").stdout
    assert "integration  ran    1  passed    0  failed   1  skipped   0" in out
    assert "boot         ran    1  passed    1  failed   0  skipped   0" in out
    assert "unit         ran    0  passed    0  failed   0  skipped   1" in out
    assert "entropi: timing" in out and "test_boot_that_runs" in out and "whole run" in out
