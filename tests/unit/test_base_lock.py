"""Two entropis that need the same base image build it once: the second waits for the first's lock
and takes its image (a real flock held by another process; the build itself is replaced)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stages.source import debian_base
from stages.source.debian_base import BaseSpec, ensure_base

HOLDER = """
import fcntl, sys, time
from pathlib import Path
final = Path(sys.argv[1])
with open(str(final) + ".lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()  # until the test says the other entropi is waiting
    final.write_bytes(b"built by the other one")
"""


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BaseSpec:
    monkeypatch.setenv("ENTROPI_CACHE", str(tmp_path))
    monkeypatch.setattr(debian_base, "require_tools", lambda *a: None)
    monkeypatch.setattr(debian_base, "require_binfmt", lambda *a: None)
    return BaseSpec("arm64", "bookworm")


def test_a_base_being_built_elsewhere_is_waited_for_and_not_built_again(spec: BaseSpec, monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    final = spec.path()
    final.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(final)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"

    def build(s: BaseSpec, f: Path) -> Path:
        raise AssertionError("built a second time")

    monkeypatch.setattr(debian_base, "_build", build)
    waiting = debian_base.progress.info

    def info(message: str) -> None:  # the moment this entropi says it waits, let the other one finish
        waiting(message)
        if message.startswith("waiting for another entropi that is building the same base image"):
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()

    monkeypatch.setattr(debian_base.progress, "info", info)
    assert ensure_base(spec) == final and final.read_bytes() == b"built by the other one"
    assert holder.wait(timeout=30) == 0
    out = capsys.readouterr()
    assert "built meanwhile" in out.out + out.err


def test_without_another_entropi_it_builds_under_the_lock(spec: BaseSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def build(s: BaseSpec, f: Path) -> Path:
        built.append(f)
        f.write_bytes(b"mine")
        return f

    monkeypatch.setattr(debian_base, "_build", build)
    assert ensure_base(spec) == spec.path() and built == [spec.path()]
    assert ensure_base(spec) == spec.path() and len(built) == 1  # cached now
