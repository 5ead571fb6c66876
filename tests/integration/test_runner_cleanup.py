"""A stage that raises, and a SIGINT/SIGTERM mid-run, leave nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, need_root, need_tools

pytestmark = pytest.mark.integration


def _leftovers(work: Path, out: Path) -> list[str]:
    found = []
    mounts = Path("/proc/mounts").read_text()
    if str(work) in mounts:
        found.append("mount")
    loops = subprocess.run(["losetup", "-j", str(work / "fs.img")], capture_output=True, text=True).stdout
    if loops.strip():
        found.append("loop device: " + loops.strip())
    procs = subprocess.run(["pgrep", "-f", "sleep 6543"], capture_output=True, text=True).stdout
    if procs.strip():
        found.append("child process")
    found += [f"file {p.name}" for p in out.iterdir()] if out.exists() else []
    return found


def _victim(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path, Path]:
    need_root()
    need_tools("losetup", "mkfs.ext4", "mount")
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "runner_victim.py"), str(work), str(out), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, work, out


def test_stage_that_raises_leaves_no_mounts_loops_children_or_outputs(tmp_path: Path) -> None:
    proc, work, out = _victim(tmp_path, "raise")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "stage failed on purpose" in err
    assert _leftovers(work, out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_leaves_no_mounts_loops_children_or_outputs(tmp_path: Path, sig: int) -> None:
    proc, work, out = _victim(tmp_path, "hang")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    assert "mount" in _leftovers(work, out)  # the resources really exist mid-run
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Interrupted" in err
    assert _leftovers(work, out) == []


def test_successful_run_renames_output_and_writes_manifest(tmp_path: Path) -> None:
    proc, work, out = _victim(tmp_path, "ok")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["victim.img", "victim.manifest.json"]
    manifest = (out / "victim.manifest.json").read_text()
    assert '"name": "loop mount"' in manifest and '"recipe_sha256"' in manifest
