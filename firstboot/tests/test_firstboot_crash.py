"""Crash safety of firstboot/entropi-firstboot: kill it after every file operation.

The program runs as the unit runs it: the launcher, as a process, with its package
entropi_firstboot/ next to it.

ENTROPI_FIRSTBOOT_FAULT_AFTER=N makes the program exit 99 right after its N-th file
operation (mkdir, write, fsync, rename, unlink, chmod, ssh-keygen run). After each such
"reset" the state must be sound (any private key has its complete, matching .pub), the
next boot's run must end with sound pairs for every configured type, committed and
published as committed, and the boot after that must find nothing to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parents[1] / "entropi-firstboot"  # the launcher
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
TYPES = ("ed25519", "ecdsa")
FAULT_EXIT = 99

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")


def make_tree(base: Path, hwrng: bool = True) -> Path:
    root = base / "root"
    for name in ("etc/ssh", "etc/entropi", "boot/firmware"):
        (root / name).mkdir(parents=True)
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "etc/issue").write_text("Debian GNU/Linux 12 \\n \\l\n\n")
    (root / "etc/entropi/firstboot.json").write_text(json.dumps({
        "key_types": [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}],
        "wait_timeout": 5,
    }))
    random = base / "proc/sys/kernel/random"
    random.mkdir(parents=True)
    (random / "entropy_avail").write_text("256\n")
    (random / "poolsize").write_text("256\n")
    (base / "proc/sys/kernel/osrelease").write_text("6.6.51+rpt-rpi-v8\n")
    (base / "proc/uptime").write_text("5.00 5.00\n")
    (base / "proc/self").mkdir()
    (base / "proc/self/mountinfo").write_text(
        "25 1 179:1 / %s rw,relatime - vfat /dev/mmcblk0p1 rw\n" % (root / "boot/firmware"))
    if hwrng:
        rng = base / "sys/class/misc/hw_random"
        rng.mkdir(parents=True)
        (rng / "rng_available").write_text("3f104000.rng \n")
        (rng / "rng_current").write_text("3f104000.rng\n")
    return root


def run_program(base: Path, fault=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ENTROPI_FIRSTBOOT_FAULT_AFTER", None)
    if fault is not None:
        env["ENTROPI_FIRSTBOOT_FAULT_AFTER"] = str(fault)
    # -IS as on the device (the launcher's first line): the program needs no site-packages.
    args = [sys.executable, "-IS", str(PROGRAM), "--root", str(base / "root"),
            "--proc", str(base / "proc"), "--sys", str(base / "sys")]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def derived_public(private: Path):
    result = subprocess.run([SSH_KEYGEN, "-y", "-f", str(private)], capture_output=True,
                            text=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout.split()[:2] if result.returncode == 0 else None


def private_implies_sound_pair(root: Path, ktype: str) -> str:
    """'' if the type has no private key or a sound pair; otherwise what is wrong."""
    private = root / "etc/ssh" / (f"ssh_host_{ktype}_key")
    public = Path(str(private) + ".pub")
    if not private.exists():
        return ""
    if not public.exists():
        return f"{private.name} has no .pub"
    if private.stat().st_size == 0 or public.stat().st_size == 0:
        return f"{private.name} pair has an empty file"
    if derived_public(private) != public.read_text().split()[:2]:
        return f"{private.name} pair does not match"
    return ""


def assert_complete(root: Path, context: str) -> None:
    for ktype in TYPES:
        private = root / "etc/ssh" / (f"ssh_host_{ktype}_key")
        assert private.exists(), f"{context}: no {ktype} key"
        problem = private_implies_sound_pair(root, ktype)
        assert problem == "", f"{context}: {problem}"
    leftovers = [os.path.join(d, n) for d, _, names in os.walk(str(root)) for n in names
                 if n.startswith(".entropi-")]
    assert leftovers == [], f"{context}: temporary files left: {leftovers}"


def verdict_of(result: subprocess.CompletedProcess) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.startswith("ENTROPI-FIRSTBOOT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0][len("ENTROPI-FIRSTBOOT "):])


def assert_committed_and_published(root: Path, verdict: dict, context: str) -> None:
    record = json.loads((root / "var/lib/entropi/committed.json").read_text())
    lines = [key["fingerprint"] for key in record["keys"]]
    assert lines == verdict["fingerprints"], context
    published = (root / "boot/firmware/entropi/ssh_host_fingerprints.txt").read_text()
    assert published.splitlines() == lines, context
    served = sorted(" ".join(p.read_text().split()[:2]) for p in (root / "etc/ssh").glob("ssh_host_*_key.pub"))
    assert served == sorted(key["public"] for key in record["keys"]), context


def operations_of_a_whole_run(base: Path) -> int:
    """How many file operations a whole first run makes (it says so when fault injection is on)."""
    make_tree(base)
    result = run_program(base, 10**6)
    assert result.returncode == 0, result.stderr
    match = re.search(r"fault injection: the run ended after (\d+) file operations", result.stderr)
    assert match, result.stderr
    return int(match.group(1))


def reset_after(base: Path, fault: int) -> None:
    """One boot cut after file operation ``fault``, then the next two boots."""
    root = make_tree(base)
    context = f"fault after op {fault}"
    result = run_program(base, fault)
    assert result.returncode == FAULT_EXIT, f"{context}: {result.stderr}"
    assert f"fault injected after file operation {fault}" in result.stderr
    for ktype in TYPES:
        problem = private_implies_sound_pair(root, ktype)
        assert problem == "", f"{context}: after the reset: {problem}"

    rerun = run_program(base)

    assert rerun.returncode == 0, f"{context}: rerun failed: {rerun.stderr}"
    verdict = verdict_of(rerun)
    assert verdict["status"] == "ok", context
    assert verdict["crng_ready_before_keys"] is True, context
    assert_complete(root, context + ", after the rerun")
    assert_committed_and_published(root, verdict, context)
    again = verdict_of(run_program(base))
    assert again["action"] == "unchanged" and again["fingerprints"] == verdict["fingerprints"], context


def test_reset_after_every_file_operation_is_recovered_by_the_next_run(tmp_path):
    total = operations_of_a_whole_run(tmp_path / "whole")
    assert total > 30, f"expected many file operations, saw {total}"
    # Each reset gets its own card; the boots are processes, so threads run them side by side.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        done = list(pool.map(lambda fault: reset_after(tmp_path / f"n{fault:03d}", fault), range(1, total + 1)))
    assert len(done) == total
    assert_complete(tmp_path / "whole/root", "unfaulted run")


def test_reset_during_a_rerun_is_recovered(tmp_path):
    """A second interrupted run (keys half made by the first) also recovers."""
    base = tmp_path / "t"
    root = make_tree(base)
    first = run_program(base, 40)
    assert first.returncode == FAULT_EXIT, first.stderr
    for fault in (3, 9, 15, 21):
        result = run_program(base, fault)
        assert result.returncode in (0, FAULT_EXIT), result.stderr
        for ktype in TYPES:
            assert private_implies_sound_pair(root, ktype) == ""
    final = run_program(base)
    assert final.returncode == 0, final.stderr
    assert_complete(root, "after several resets")


def test_plain_run_prints_fingerprint_lines_then_one_verdict_line(tmp_path):
    base = tmp_path / "t"
    root = make_tree(base, hwrng=False)

    result = run_program(base)

    assert result.returncode == 0, result.stderr
    verdict = verdict_of(result)
    assert verdict["status"] == "ok" and verdict["hwrng"] is None
    assert_complete(root, "plain run")
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("ENTROPI-FIRSTBOOT {")
    assert [line for line in lines if line.startswith("ENTROPI-FINGERPRINT ")] == \
        ["ENTROPI-FINGERPRINT " + fp for fp in verdict["fingerprints"]]
