"""The quick check: entropi-guard (POSIX sh) skips the program only when nothing it rests on
changed since a clean run, and runs it for every change the program would act on.

The real guard runs under /bin/sh against a helpers.Tree; beside a copy of it, a stand-in
entropi-firstboot says it was called (the real program runs in-process, as in the other tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from firstboot.tests.helpers import PROGRAM, SSH_KEYGEN, make_pair, run

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")
GUARD = PROGRAM.with_name("entropi-guard")
SLOW = "THE PROGRAM RAN"


@pytest.fixture
def guard(tmp_path) -> Path:
    """A copy of the guard with a stand-in program next to it."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy2(str(GUARD), str(lib / "entropi-guard"))
    stand_in = lib / "entropi-firstboot"
    stand_in.write_text(f'#!/bin/sh\necho "{SLOW} $*"\n')
    stand_in.chmod(0o755)
    return lib / "entropi-guard"


def boot(guard: Path, tree) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", str(guard), *tree.args()], capture_output=True, text=True, timeout=30)


@pytest.fixture
def clean_card(fb, tree, clock, crng, capsys):
    """A card after a clean first run: committed, published, the quick check's state recorded."""
    crng(0)
    code, verdict, _ = run(fb, tree, capsys)
    assert code == 0 and verdict["action"] == "first-run", verdict
    assert (tree.root / "var/lib/entropi/quick-check").is_file()
    return verdict


def test_an_unchanged_card_passes_the_quick_check_and_says_so_without_the_program(guard, tree, clean_card):
    done = boot(guard, tree)
    assert done.returncode == 0, done.stderr
    assert SLOW not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "ENTROPI-DONE unchanged: nothing to do: the host keys are the committed set (quick check)"
    assert [line[len("ENTROPI-FINGERPRINT "):] for line in lines[1:-1]] == clean_card["fingerprints"]
    verdict = json.loads(lines[-1][len("ENTROPI-FIRSTBOOT "):])
    assert verdict["action"] == "unchanged" and verdict["quick_check"] is True and verdict["status"] == "ok"
    assert isinstance(verdict["guard_seconds"], float) and verdict["keys_source"] == "made-here"
    assert verdict["hostname"] == "raspberrypi" and verdict["provisional"] is False


def rewrite_same_bytes(path):
    data = path.read_bytes()
    path.write_bytes(data)  # the same content: the change time still moves


def replace_key(tree, tmp_path):
    make_pair(tmp_path / "other")
    shutil.copy(str(tmp_path / "other"), str(tree.key("ed25519")))


CHANGES = {
    "a key replaced": replace_key,
    "a key type added": lambda tree, tmp: (tree.root / "etc/ssh/ssh_host_xmss_key").write_text("x\n"),
    "a public key removed": lambda tree, tmp: tree.pub("ecdsa").unlink(),
    "a private key emptied": lambda tree, tmp: tree.key("ed25519").write_bytes(b""),
    "a private key's mode": lambda tree, tmp: tree.key("ecdsa").chmod(0o644),
    "a key's owner": lambda tree, tmp: os.chown(str(tree.key("ecdsa")), 1000, -1),
    "the committed set edited": lambda tree, tmp: tree.committed.write_text(tree.committed.read_text() + " "),
    "the configuration": lambda tree, tmp: tree.config({"key_types": [{"type": "ed25519"}]}),
    "a host name for the card": lambda tree, tmp: (tree.out / "hostname").write_text("pi-07\n"),
    "the published known_hosts": lambda tree, tmp: (tree.out / "known_hosts").write_text(""),
    "/etc/issue": lambda tree, tmp: (tree.root / "etc/issue").write_text("Debian\n"),
    "/etc/hostname": lambda tree, tmp: (tree.root / "etc/hostname").write_text("other\n"),
    "a key rewritten with the same bytes": lambda tree, tmp: rewrite_same_bytes(tree.key("ed25519")),
    "a key restored from a copy": lambda tree, tmp: (shutil.copy2(str(tree.key("ecdsa")), str(tmp / "k")),
                                                     os.replace(str(tmp / "k"), str(tree.key("ecdsa")))),
    "the state removed": lambda tree, tmp: (tree.root / "var/lib/entropi/quick-check").unlink(),
    "the state damaged": lambda tree, tmp: (tree.root / "var/lib/entropi/quick-check").write_text("--\n"),
    "the state of another version": lambda tree, tmp: (tree.root / "var/lib/entropi/quick-check").write_text(
        (tree.root / "var/lib/entropi/quick-check").read_text().replace("check 1", "check 2", 1)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_the_program_would_act_on_runs_the_program(guard, tree, clean_card, tmp_path, change):
    CHANGES[change](tree, tmp_path)
    done = boot(guard, tree)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{SLOW} {' '.join(tree.args())}", done.stdout


def test_a_run_that_ends_clean_records_the_state_only_when_it_differs(fb, tree, clean_card, capsys, monkeypatch):
    state = tree.root / "var/lib/entropi/quick-check"
    state.unlink()
    code, verdict, _ = run(fb, tree, capsys)  # unchanged, but no state: recorded again
    assert code == 0 and verdict["action"] == "unchanged" and state.is_file()
    writes: list = []
    monkeypatch.setattr(fb.fileops.FileOps, "tick", lambda self, what: writes.append(what))
    run(fb, tree, capsys)
    assert writes == [], "the same state is not written again"
    assert oct(state.stat().st_mode & 0o777) == "0o600"


def test_provisional_keys_leave_no_state(fb, tree, clock, crng, capsys):
    tree.config({"key_types": [{"type": "ed25519"}], "wait_timeout": 5, "on_timeout": "continue"})
    crng(float("inf"))
    code, verdict, _ = run(fb, tree, capsys)
    assert code == 0 and verdict["provisional"] is True
    assert not (tree.root / "var/lib/entropi/quick-check").exists()


def test_a_boot_partition_that_could_not_be_published_to_removes_the_state(guard, fb, tree, clean_card, capsys):
    (tree.out / "known_hosts").write_text("stale\n")
    tree.set_boot("ro")  # the republication fails: a warning, retried at the next boot
    code, verdict, _ = run(fb, tree, capsys)
    assert code == 0 and verdict["action"] == "republished" and verdict["warnings"]
    assert not (tree.root / "var/lib/entropi/quick-check").exists()
    assert SLOW in boot(guard, tree).stdout


def test_the_guard_tells_the_program_the_kernels_view_at_its_start(guard, tree):
    guard.with_name("entropi-firstboot").write_text('#!/bin/sh\necho "view: $ENTROPI_GUARD_START"\n')
    done = boot(guard, tree)  # no state: the program runs
    up, avail, pool = done.stdout.split(": ", 1)[1].split()
    assert float(up) > 0 and int(avail) >= 0 and int(pool) > 0, done.stdout
