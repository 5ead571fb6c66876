"""Unit tests of firstboot/entropi-firstboot against a fake /, /proc and /sys.

The program's package (firstboot/entropi_firstboot/) runs in-process through main.main(), the
call the launcher makes (seams.getrandom, seams.monotonic and seams.sleep are replaced), with
the real ssh-keygen; a few tests run the launcher itself. Crash-safety tests that kill the
program live in test_firstboot_crash.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import firstboot.entropi_firstboot.main  # noqa: F401  (loads every module of the package)
from firstboot import entropi_firstboot

PROGRAM = Path(__file__).resolve().parents[1] / "entropi-firstboot"  # the launcher
PACKAGE = PROGRAM.parent / "entropi_firstboot"
UNIT = PROGRAM.parent / "entropi-firstboot.service"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
FAST_KEYS = [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}]

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")


@pytest.fixture
def fb():
    """The program's package, every module loaded (fb.main, fb.seams, fb.config, ...): the
    code the launcher runs, imported from firstboot/entropi_firstboot/."""
    return entropi_firstboot


class FakeClock:
    """monotonic()/sleep() pair: sleeping advances time and runs hooks."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.hooks = []
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        for hook in self.hooks:
            hook(self)


class Tree:
    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.proc = base / "proc"
        self.sys = base / "sys"
        for name in ("etc/ssh", "etc/entropi", "boot/firmware", "var"):
            (self.root / name).mkdir(parents=True)
        (self.root / "etc/hostname").write_text("raspberrypi\n")
        (self.root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
        (self.root / "etc/issue").write_text("Debian GNU/Linux 12 \\n \\l\n\n")
        random = self.proc / "sys/kernel/random"
        random.mkdir(parents=True)
        (self.proc / "sys/kernel/osrelease").write_text("6.6.51+rpt-rpi-v8\n")
        (self.proc / "uptime").write_text("12.34 40.00\n")
        (self.proc / "1").mkdir()
        (self.proc / "1/comm").write_text("systemd\n")
        self.set_pool(avail=256, poolsize=256)
        self.set_hwrng("3f104000.rng")
        self.config({"key_types": FAST_KEYS})

    def set_pool(self, avail: int, poolsize: int) -> None:
        (self.proc / "sys/kernel/random/entropy_avail").write_text(f"{avail}\n")
        (self.proc / "sys/kernel/random/poolsize").write_text(f"{poolsize}\n")

    def set_hwrng(self, name) -> None:
        base = self.sys / "class/misc/hw_random"
        if name is None:
            shutil.rmtree(str(self.sys / "class"), ignore_errors=True)
            return
        base.mkdir(parents=True, exist_ok=True)
        (base / "rng_available").write_text(name + " \n")
        (base / "rng_current").write_text(name + "\n")

    def start_rngd(self) -> None:
        (self.proc / "345").mkdir()
        (self.proc / "345/comm").write_text("rngd\n")

    def config(self, data) -> None:
        (self.root / "etc/entropi/firstboot.json").write_text(json.dumps(data))

    def args(self):
        return ["--root", str(self.root), "--proc", str(self.proc), "--sys", str(self.sys)]

    @property
    def out(self) -> Path:
        return self.root / "boot/firmware/entropi"

    def key(self, ktype: str) -> Path:
        return self.root / "etc/ssh" / (f"ssh_host_{ktype}_key")


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


@pytest.fixture
def clock(fb, monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(fb.seams, "monotonic", fake.monotonic)
    monkeypatch.setattr(fb.seams, "sleep", fake.sleep)
    return fake


def crng_ready_after(clock: FakeClock, at: float):
    """A getrandom that raises EAGAIN until the fake clock reaches `at`."""

    def getrandom(size, flags):
        assert flags & os.GRND_NONBLOCK, "the crng must be probed without blocking"
        if clock.now < at:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return b"\0" * size

    return getrandom


def run(fb, tree, capsys):
    code = fb.main.main(tree.args())
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if line.startswith("ENTROPI-FIRSTBOOT ")]
    assert len(verdicts) == 1, "exactly one verdict line expected, got:\n" + out
    verdict = json.loads(verdicts[0][len("ENTROPI-FIRSTBOOT "):])
    return code, verdict, out


def keygen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SSH_KEYGEN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def assert_sound_pair(private: Path) -> None:
    public = Path(str(private) + ".pub")
    assert private.exists() and public.exists(), f"missing half of {private}"
    assert private.stat().st_size > 0 and public.stat().st_size > 0, f"empty key file {private}"
    assert oct(private.stat().st_mode & 0o777) == "0o600", "private key mode"
    assert oct(public.stat().st_mode & 0o777) == "0o644", "public key mode"
    derived = keygen("-y", "-f", str(private))
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == public.read_text().split()[:2], f"pair mismatch {private}"


def evidence(tree: Tree) -> dict:
    return json.loads((tree.root / "var/log/entropi/firstboot-evidence.json").read_text())


# --- waiting for entropy ---------------------------------------------------------


def test_new_kernel_waits_for_crng_then_makes_keys_after_it(fb, tree, clock, capsys, monkeypatch):
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 1003.0))

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0, out
    assert verdict["status"] == "ok"
    assert verdict["crng_ready_before_keys"] is True
    assert 2.9 <= verdict["waited_seconds"] <= 3.5, verdict
    ev = evidence(tree)
    assert ev["at_start"]["crng_ready"] is False
    assert ev["wait"]["legacy_pool"] is False
    assert ev["crng_ready_at"] >= 1003.0
    assert ev["crng_ready_at"] <= ev["first_keygen_started_at"] <= ev["first_key_written_at"]
    assert ev["kernel"] == "6.6.51+rpt-rpi-v8"
    for ktype in ("ed25519", "ecdsa"):
        assert_sound_pair(tree.key(ktype))


def test_old_kernel_waits_until_entropy_avail_reaches_min_entropy(fb, tree, clock, capsys,
                                                                  monkeypatch):
    tree.set_pool(avail=100, poolsize=4096)
    tree.config({"key_types": FAST_KEYS, "min_entropy": 2048})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    def rise(c: FakeClock) -> None:
        level = int((tree.proc / "sys/kernel/random/entropy_avail").read_text())
        tree.set_pool(avail=level + 250, poolsize=4096)

    clock.hooks.append(rise)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0, out
    assert verdict["status"] == "ok"
    ev = evidence(tree)
    assert ev["wait"]["legacy_pool"] is True and ev["wait"]["min_entropy"] == 2048
    assert ev["wait"]["entropy_avail_at_end"] >= 2048
    assert clock.sleeps == 8, "100 + 8*250 is the first level >= 2048"
    assert ev["entropy_level_reached_at"] <= ev["first_keygen_started_at"]
    assert ev["at_start"]["entropy_avail"] == 100 and ev["at_start"]["poolsize"] == 4096


def test_new_kernel_ignores_min_entropy_when_crng_is_ready(fb, tree, clock, capsys, monkeypatch):
    tree.set_pool(avail=40, poolsize=256)
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["waited_seconds"] == 0
    assert clock.sleeps == 0


def test_timeout_with_continue_makes_keys_and_warns_in_every_report(fb, tree, clock, capsys,
                                                                    monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 30, "on_timeout": "continue"})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, float("inf")))

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0, out
    assert verdict["status"] == "timeout-continue"
    assert verdict["crng_ready_before_keys"] is False
    assert 30 <= verdict["waited_seconds"] < 31
    assert any("timed out" in w for w in verdict["warnings"]), verdict["warnings"]
    assert "ENTROPI-WARNING entropy wait timed out after 30.0s: crng not ready" in out
    for ktype in ("ed25519", "ecdsa"):
        assert_sound_pair(tree.key(ktype))
    ev = evidence(tree)
    assert ev["status"] == "timeout-continue" and ev["wait"]["timed_out"] is True
    assert ev["wait"]["reason"] == "crng not ready"
    fingerprints = (tree.out / "ssh_host_fingerprints.txt").read_text()
    assert fingerprints.startswith("# WARNING: SSH host keys were made after the entropy wait")
    issue = (tree.root / "etc/issue").read_text()
    assert "WARNING: SSH host keys were made after the entropy wait timed out" in issue
    assert (tree.root / "var/lib/entropi/firstboot.done").exists()


def test_timeout_with_fail_makes_no_keys_and_exits_nonzero(fb, tree, clock, capsys, monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 5, "on_timeout": "fail"})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, float("inf")))
    (tree.root / "etc/ssh/ssh_host_ed25519_key").write_text("baked into the image")

    code, verdict, out = run(fb, tree, capsys)

    assert code == fb.main.EXIT_TIMEOUT_FAIL == 1
    assert verdict["status"] == "failed"
    assert verdict["error"] == "entropy wait timed out (crng not ready)"
    assert verdict["fingerprints"] == []
    assert "ENTROPI-FINGERPRINT" not in out
    assert sorted(os.listdir(str(tree.root / "etc/ssh"))) == [], "no host key may exist"
    assert not (tree.root / "var/lib/entropi/firstboot.done").exists()
    assert evidence(tree)["status"] == "failed"
    assert "FAILED: entropy wait timed out" in (tree.out / "ssh_host_fingerprints.txt").read_text()
    assert "sshd is kept down" in (tree.root / "etc/issue").read_text()


def test_failed_run_is_retried_at_next_boot_and_then_succeeds(fb, tree, clock, capsys,
                                                             monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 5, "on_timeout": "fail"})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, float("inf")))
    assert run(fb, tree, capsys)[0] == 1
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok" and len(verdict["fingerprints"]) == 2
    assert "FAILED" not in (tree.root / "etc/issue").read_text()


def test_no_hwrng_is_recorded_and_keys_are_still_made(fb, tree, clock, capsys, monkeypatch):
    tree.set_hwrng(None)
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["hwrng"] is None
    ev = evidence(tree)
    assert ev["hwrng"] == {"present": False, "available": [], "current": None, "sysfs": False}
    assert ev["at_start"]["rngd_running"] is False


def test_evidence_records_hwrng_rngd_uptime_and_per_key_timings(fb, tree, clock, capsys,
                                                                monkeypatch):
    tree.start_rngd()
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    run(fb, tree, capsys)

    ev = evidence(tree)
    assert ev["hwrng"]["present"] is True and ev["hwrng"]["current"] == "3f104000.rng"
    assert ev["at_start"]["rngd_running"] is True
    assert ev["at_start"]["uptime"] == 12.34
    assert [k["type"] for k in ev["keys"]] == ["ed25519", "ecdsa"]
    assert all(k["action"] == "generated" and k["seconds"] >= 0 for k in ev["keys"])
    boot_copy = json.loads((tree.out / "firstboot-evidence.json").read_text())
    assert boot_copy == ev


def test_missing_config_file_means_all_defaults(fb, tmp_path):
    config = fb.config.load_config(str(tmp_path / "absent.json"))
    assert config == {
        "key_types": [{"type": "ed25519", "bits": None}, {"type": "ecdsa", "bits": 521},
                      {"type": "rsa", "bits": 4096}],
        "wait_timeout": 300, "on_timeout": "continue", "min_entropy": 2048,
        "boot_dir": "/boot/firmware",
    }


def test_partial_config_keeps_defaults_for_missing_keys(fb, tmp_path):
    path = tmp_path / "firstboot.json"
    path.write_text(json.dumps({"on_timeout": "fail"}))
    config = fb.config.load_config(str(path))
    assert config["on_timeout"] == "fail"
    assert config["wait_timeout"] == 300 and config["min_entropy"] == 2048
    assert config["boot_dir"] == "/boot/firmware"
    assert [k["type"] for k in config["key_types"]] == ["ed25519", "ecdsa", "rsa"]


@pytest.mark.parametrize("data, message", [
    ({"wait_timeout": -1}, r"wait_timeout must be a number of seconds >= 0"),
    ({"on_timeout": "retry"}, r'on_timeout must be "continue" or "fail"'),
    ({"colour": "red"}, r"unknown key\(s\): colour"),
    ({"key_types": [{"type": "dsa"}]}, r"unsupported type 'dsa'"),
    ({"key_types": [{"type": "ecdsa", "bits": 512}]}, r"ecdsa bits must be 256, 384 or 521"),
    ({"boot_dir": "boot"}, r"boot_dir must be an absolute path"),
])
def test_bad_config_is_refused_with_a_message_and_no_keys(fb, tree, capsys, data, message):
    tree.config(data)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == fb.main.EXIT_CONFIG == 2
    assert verdict["status"] == "failed"
    assert re.search(message, verdict["error"]), verdict["error"]
    assert os.listdir(str(tree.root / "etc/ssh")) == []
    assert "FAILED: configuration error" in (tree.root / "etc/issue").read_text()
    assert evidence(tree)["error"] == verdict["error"]
    assert not (tree.root / "var/lib/entropi/firstboot.done").exists()


# --- publication -----------------------------------------------------------------


def test_published_fingerprints_equal_ssh_keygen_of_the_keys(fb, tree, clock, capsys, monkeypatch):
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0
    expected = [keygen("-lf", str(tree.key(t)) + ".pub").stdout.strip() for t in ("ed25519", "ecdsa")]
    assert all("SHA256:" in line for line in expected)
    assert verdict["fingerprints"] == expected
    assert (tree.out / "ssh_host_fingerprints.txt").read_text().splitlines() == expected
    assert [line[len("ENTROPI-FINGERPRINT "):] for line in out.splitlines()
            if line.startswith("ENTROPI-FINGERPRINT ")] == expected
    issue = (tree.root / "etc/issue").read_text()
    assert issue.startswith("Debian GNU/Linux 12 \\n \\l\n")
    for line in expected:
        assert line in issue
    assert verdict["evidence"] == str(tree.root / "var/log/entropi/firstboot-evidence.json")


def test_known_hosts_is_accepted_by_ssh_keygen_for_the_hostname(fb, tree, clock, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))
    run(fb, tree, capsys)
    known_hosts = tree.out / "known_hosts"

    found = keygen("-F", "raspberrypi", "-f", str(known_hosts))

    assert found.returncode == 0, found.stderr
    assert "ssh-ed25519 " in found.stdout and "ecdsa-sha2-nistp256 " in found.stdout
    for ktype in ("ed25519", "ecdsa"):
        blob = tree.key(ktype).with_suffix(".pub").read_text().split()[1]
        assert blob in found.stdout, f"{ktype} key missing from known_hosts"
    assert keygen("-F", "otherhost", "-f", str(known_hosts)).returncode != 0


def test_issue_block_is_replaced_not_duplicated_on_a_second_run(fb, tree, clock, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))
    run(fb, tree, capsys)
    run(fb, tree, capsys)

    issue = (tree.root / "etc/issue").read_text()

    assert issue.count(fb.publish.ISSUE_BEGIN) == 1 and issue.count(fb.publish.ISSUE_END) == 1
    assert issue.count("Debian GNU/Linux 12") == 1


def run_with_boot_hostname(fb, tree, clock, capsys, monkeypatch, text):
    """One first boot with ``text`` in the boot partition's entropi/hostname."""
    tree.out.mkdir(parents=True)
    (tree.out / "hostname").write_text(text)
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))
    return run(fb, tree, capsys)


def test_hostname_from_boot_partition_is_applied_before_keys(fb, tree, clock, capsys, monkeypatch):
    code, verdict, _ = run_with_boot_hostname(fb, tree, clock, capsys, monkeypatch, "pi-card-07\n")

    assert code == 0 and verdict["hostname"] == "pi-card-07"
    assert (tree.root / "etc/hostname").read_text() == "pi-card-07\n"
    hosts = (tree.root / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tpi-card-07" in hosts and not any("raspberrypi" in h for h in hosts)
    assert "127.0.0.1\tlocalhost" in hosts
    assert tree.key("ed25519").with_suffix(".pub").read_text().split()[2] == "root@pi-card-07"
    assert keygen("-F", "pi-card-07", "-f", str(tree.out / "known_hosts")).returncode == 0
    assert evidence(tree)["hostname_source"] == "boot-partition"


def test_invalid_boot_hostname_is_ignored_with_a_warning(fb, tree, clock, capsys, monkeypatch):
    code, verdict, _ = run_with_boot_hostname(fb, tree, clock, capsys, monkeypatch, "bad_name!\n")

    assert code == 0 and verdict["hostname"] == "raspberrypi"
    assert any("not a valid RFC 1123 host name" in w for w in verdict["warnings"])
    assert (tree.root / "etc/hostname").read_text() == "raspberrypi\n"


@pytest.mark.parametrize("name, ok", [
    ("pi", True), ("pi-07", True), ("a.example.org", True), ("7pi", True),
    ("-pi", False), ("pi-", False), ("pi_1", False), ("", False), ("a" * 64, False),
    ("a..b", False), ("pi.", False),
])
def test_hostname_validation_follows_rfc_1123(fb, name, ok):
    assert fb.hostname.valid_hostname(name) is ok


def test_missing_boot_partition_still_makes_keys_and_warns(fb, tree, clock, capsys, monkeypatch):
    shutil.rmtree(str(tree.root / "boot"))
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert any("boot partition /boot/firmware not found" in w for w in verdict["warnings"])
    assert not (tree.root / "boot").exists(), "must not create the boot dir on the root fs"


def test_marker_is_written_at_the_end_of_a_successful_run(fb, tree, clock, capsys, monkeypatch):
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))
    assert not (tree.root / "var/lib/entropi/firstboot.done").exists()

    run(fb, tree, capsys)

    assert (tree.root / "var/lib/entropi/firstboot.done").read_text() == "done\n"


# --- keys found at start ---------------------------------------------------------


def make_pair(path: Path, ktype: str = "ed25519") -> None:
    result = keygen("-q", "-N", "", "-t", ktype, "-f", str(path))
    assert result.returncode == 0, result.stderr


def resume(tree: Tree) -> None:
    """Pretend an earlier run started (so keys found are checked, not wiped)."""
    (tree.root / "var/lib/entropi").mkdir(parents=True, exist_ok=True)
    (tree.root / "var/lib/entropi/firstboot.started").write_text("x\n")


def test_keys_present_before_the_first_run_are_never_trusted(fb, tree, clock, capsys, monkeypatch):
    make_pair(tree.key("ed25519"))
    baked = tree.key("ed25519").with_suffix(".pub").read_text().split()[1]
    (tree.root / "etc/ssh/ssh_host_dsa_key").write_text("old")
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, _, _ = run(fb, tree, capsys)

    assert code == 0
    assert tree.key("ed25519").with_suffix(".pub").read_text().split()[1] != baked
    assert not (tree.root / "etc/ssh/ssh_host_dsa_key").exists()
    reasons = {r["path"]: r["reason"] for r in evidence(tree)["removed"]}
    assert reasons[str(tree.key("ed25519"))] == "present before the first run"


def test_zero_length_keys_left_by_other_tools_are_replaced(fb, tree, clock, capsys, monkeypatch):
    resume(tree)
    for ktype in ("ed25519", "ecdsa"):
        tree.key(ktype).write_bytes(b"")
        tree.key(ktype).with_suffix(".pub").write_bytes(b"")
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0
    for ktype in ("ed25519", "ecdsa"):
        assert_sound_pair(tree.key(ktype))
    assert any("private key is empty" in w for w in verdict["warnings"])


def test_truncated_private_key_is_replaced(fb, tree, clock, capsys, monkeypatch):
    resume(tree)
    make_pair(tree.key("ed25519"))
    old_pub = tree.key("ed25519").with_suffix(".pub").read_text()
    data = tree.key("ed25519").read_bytes()
    tree.key("ed25519").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0
    assert_sound_pair(tree.key("ed25519"))
    assert tree.key("ed25519").with_suffix(".pub").read_text() != old_pub
    assert any("private key unreadable" in w for w in verdict["warnings"])


def test_mismatched_pair_is_replaced(fb, tree, clock, capsys, monkeypatch, tmp_path):
    resume(tree)
    make_pair(tree.key("ed25519"))
    make_pair(tmp_path / "other")
    shutil.copy(str(tmp_path / "other.pub"), str(tree.key("ed25519")) + ".pub")
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0
    assert_sound_pair(tree.key("ed25519"))
    assert any("public key does not match the private key" in w for w in verdict["warnings"])


def test_private_key_without_public_key_and_orphan_public_key_are_replaced(fb, tree, clock, capsys,
                                                                           monkeypatch):
    resume(tree)
    make_pair(tree.key("ed25519"))
    tree.key("ed25519").with_suffix(".pub").unlink()
    make_pair(tree.key("ecdsa"), "ecdsa")
    tree.key("ecdsa").unlink()
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, _, _ = run(fb, tree, capsys)

    assert code == 0
    for ktype in ("ed25519", "ecdsa"):
        assert_sound_pair(tree.key(ktype))
    reasons = [r["reason"] for r in evidence(tree)["removed"]]
    assert "public key is missing" in reasons and "public key without private key" in reasons


def test_sound_pair_from_an_interrupted_run_is_kept(fb, tree, clock, capsys, monkeypatch):
    resume(tree)
    make_pair(tree.key("ed25519"))
    before = tree.key("ed25519").read_bytes()
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["crng_ready_before_keys"] is True
    assert tree.key("ed25519").read_bytes() == before
    actions = {k["type"]: k["action"] for k in evidence(tree)["keys"]}
    assert actions == {"ed25519": "kept", "ecdsa": "generated"}


def test_key_of_wrong_size_for_the_config_is_replaced(fb, tree, clock, capsys, monkeypatch):
    resume(tree)
    make_pair(tree.key("ecdsa"), "ecdsa")  # 256 bits
    tree.config({"key_types": [{"type": "ecdsa", "bits": 384}]})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0
    assert tree.key("ecdsa").with_suffix(".pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert any("configured ecdsa-sha2-nistp384" in w for w in verdict["warnings"])


def test_keys_made_after_a_timeout_are_replaced_by_a_later_run_that_completes(
        fb, tree, clock, capsys, monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 1})
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, float("inf")))
    assert run(fb, tree, capsys)[1]["status"] == "timeout-continue"
    weak = tree.key("ed25519").read_bytes()
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)  # e.g. run again by hand

    assert code == 0 and verdict["status"] == "ok" and verdict["crng_ready_before_keys"] is True
    assert tree.key("ed25519").read_bytes() != weak
    assert not (tree.root / "var/lib/entropi/firstboot.keys-made-after-timeout").exists()


def test_default_config_makes_ed25519_ecdsa521_rsa4096(fb, tree, clock, capsys, monkeypatch):
    (tree.root / "etc/entropi/firstboot.json").unlink()
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    for ktype in ("ed25519", "ecdsa", "rsa"):
        assert_sound_pair(tree.key(ktype))
    sizes = [line.split()[0] + line.split()[-1] for line in verdict["fingerprints"]]
    assert sizes == ["256(ED25519)", "521(ECDSA)", "4096(RSA)"]
    found = keygen("-F", "raspberrypi", "-f", str(tree.out / "known_hosts"))
    assert found.returncode == 0
    for algorithm in ("ssh-ed25519", "ecdsa-sha2-nistp521", "ssh-rsa"):
        assert f" {algorithm} " in found.stdout


# --- the unit and portability ------------------------------------------------------


def unit_settings():
    settings = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key), []).extend(value.split())
    return settings


def test_unit_runs_once_before_sshd_after_rngd_and_keeps_sshd_down_on_failure():
    s = unit_settings()
    assert s[("Unit", "ConditionPathExists")] == ["!/var/lib/entropi/firstboot.done"]
    assert s[("Unit", "DefaultDependencies")] == ["no"]
    for before in ("ssh.service", "sshd.service"):
        assert before in s[("Unit", "Before")]
    for after in ("local-fs.target", "rngd.service", "rng-tools.service",
                  "rng-tools-debian.service", "systemd-random-seed.service",
                  "regenerate_ssh_host_keys.service", "sshd-keygen.service"):
        assert after in s[("Unit", "After")]
    assert "sysinit.target" not in s[("Unit", "Before")], "would be an ordering cycle with rngd"
    assert s[("Service", "Type")] == ["oneshot"]
    assert s[("Service", "RemainAfterExit")] == ["yes"]
    assert s[("Service", "ExecStart")] == ["/usr/lib/entropi/entropi-firstboot"]
    assert s[("Service", "StandardOutput")] == ["journal+console"]
    assert s[("Install", "RequiredBy")] == ["ssh.service"]
    assert s[("Install", "WantedBy")] == ["multi-user.target"]


def program_sources():
    """The launcher and every module of its package: the program as the build installs it."""
    return [PROGRAM, *sorted(PACKAGE.glob("*.py"))]


def test_program_source_parses_as_python_3_7():
    assert len(program_sources()) > 2, "the package's modules are missing"
    for path in program_sources():
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=(3, 7))
        for newer in ("removeprefix", "removesuffix", "cached_property", "shlex.join",
                      "Literal", "TypedDict", "Protocol", "math.prod"):
            assert newer not in source, f"{path.name}: {newer} is not available on python3.7"
    assert PROGRAM.read_text().startswith("#!/usr/bin/python3\n")
    assert os.access(str(PROGRAM), os.X_OK), "the program must be executable"


def find_python37():
    candidates = [shutil.which("python3.7"),
                  os.path.expanduser("~/.pyenv/versions/3.7.16/bin/python3.7")]
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            check = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True)
            if check.returncode == 0 and check.stdout.strip() == "(3, 7)":
                return candidate
    return None


def test_program_runs_under_python_3_7_when_available(tree):
    python37 = find_python37()
    if python37 is None:
        pytest.skip("no python3.7 interpreter here")

    result = subprocess.run([python37, str(PROGRAM), *tree.args()], capture_output=True,
                            text=True)

    assert result.returncode == 0, result.stderr
    assert '"status": "ok"' in result.stdout
    assert_sound_pair(tree.key("ed25519"))


def test_installed_launcher_finds_its_package_next_to_it_and_writes_no_bytecode(tree, tmp_path):
    """The build's layout, /usr/lib/entropi/{entropi-firstboot,entropi_firstboot/}, run with -I
    (no script directory, no PYTHON* variables on sys.path) from elsewhere."""
    lib = tmp_path / "usr/lib/entropi"
    (lib / "entropi_firstboot").mkdir(parents=True)
    shutil.copy2(str(PROGRAM), str(lib / "entropi-firstboot"))
    for module in PACKAGE.glob("*.py"):
        shutil.copy2(str(module), str(lib / "entropi_firstboot" / module.name))

    result = subprocess.run([sys.executable, "-I", str(lib / "entropi-firstboot"), *tree.args()],
                            capture_output=True, text=True, cwd=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert '"status": "ok"' in result.stdout
    assert_sound_pair(tree.key("ed25519"))
    assert not list(lib.rglob("__pycache__")), "the program wrote bytecode"


def test_program_passes_ruff():
    """`ruff check firstboot` skips the launcher (no .py): lint it, and its package, by name."""
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    result = subprocess.run([ruff, "check", "--no-cache", *map(str, program_sources())], capture_output=True,
                            text=True, cwd=str(PROGRAM.parents[1]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ssh_keygen_failure_fails_the_run_with_its_message(fb, tree, clock, capsys, monkeypatch,
                                                           tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh-keygen"
    fake.write_text("#!/bin/sh\necho 'boom: no randomness' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(fb.seams, "getrandom", crng_ready_after(clock, 0))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == fb.main.EXIT_ERROR == 3
    assert verdict["status"] == "failed"
    assert re.search(r"ssh-keygen .*-t ed25519.* failed \(exit 1\): boom: no randomness", verdict["error"])
    assert not tree.key("ed25519").exists()
    assert not (tree.root / "var/lib/entropi/firstboot.done").exists()
    assert "FAILED: ssh-keygen" in (tree.root / "etc/issue").read_text()
