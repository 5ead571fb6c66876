"""`invoke base-image --all`: bases built side by side in child processes; cached ones are not
rebuilt; a failing build is named with its own last line and the others still finish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.errors import UserError
from stages.source.base_set import build_all
from stages.source.debian_base import BaseSpec
from tests.conftest import ROOT, need_root, need_tools

pytestmark = pytest.mark.integration

DEAD_MIRROR = "http://127.0.0.1:9/debian"  # nothing listens: apt fails at once


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENTROPI_CACHE", str(tmp_path))
    return tmp_path


def test_cached_bases_are_only_listed(cache: Path) -> None:
    specs = [BaseSpec("arm64", "bookworm", DEAD_MIRROR), BaseSpec("arm64", "trixie", DEAD_MIRROR)]
    for spec in specs:
        spec.path().parent.mkdir(parents=True, exist_ok=True)
        spec.path().write_bytes(b"cached")
    assert build_all(specs) == [(spec, spec.path(), 0.0) for spec in specs]


def test_a_failing_build_is_named_and_the_cached_one_is_kept(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_root()
    need_tools("mmdebstrap", "mkfs.vfat", "mcopy", "sfdisk")
    kept, failing = BaseSpec("arm64", "bookworm", DEAD_MIRROR), BaseSpec("armhf", "trixie", DEAD_MIRROR)
    kept.path().parent.mkdir(parents=True, exist_ok=True)
    kept.path().write_bytes(b"cached")
    with pytest.raises(UserError) as e:
        build_all([kept, failing])
    assert str(e.value).startswith("error: base-image --all: failed: trixie armhf (exit 2: ")
    out = capsys.readouterr().out
    assert "[trixie armhf] " in out and "[bookworm arm64]" not in out
    assert kept.path().read_bytes() == b"cached" and not failing.path().exists()
    assert not list(failing.path().parent.glob(".work-*"))  # the failed build left no work tree


def test_the_task_prints_each_base_with_its_path(cache: Path) -> None:
    for arch, suite in (("arm64", "bookworm"), ("armhf", "bookworm"), ("arm64", "trixie")):
        path = BaseSpec(arch, suite).path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cached")
    done = subprocess.run([str(Path(sys.executable).with_name("invoke")), "-r", str(ROOT), "base-image", "--all"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["bookworm", "arm64"], ["bookworm", "armhf"], ["trixie", "arm64"]]
