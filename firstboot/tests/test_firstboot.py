"""Unit tests of the first-boot program against a fake /, /proc and /sys (helpers.Tree):
the wait, the configuration, publication, the keys it makes, the unit and portability.

The program's package (firstboot/entropi_firstboot/) runs in-process through main.main(), the
call the launcher makes (seams' functions replaced), with the real ssh-keygen; a few tests run
the launcher itself. The guard's comparisons live in test_firstboot_guard.py, crash safety in
test_firstboot_crash.py, the units in test_firstboot_units.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from firstboot.tests.helpers import (
    FAST_KEYS,
    PACKAGE,
    PROGRAM,
    SSH_KEYGEN,
    FakeClock,
    assert_sound_pair,
    committed,
    evidence,
    keygen,
    run,
)

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")


# --- waiting for entropy ---------------------------------------------------------


def test_new_kernel_waits_for_crng_with_a_blocking_call_then_makes_keys_after_it(fb, tree, clock, crng,
                                                                                   capsys):
    kernel = crng(1003.0)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0, out
    assert verdict["status"] == "ok" and verdict["action"] == "first-run"
    assert verdict["crng_ready_before_keys"] is True
    assert verdict["waited_seconds"] == 3.0, verdict
    assert kernel.blocking_calls == 1, "the wait is one blocking getrandom, not a poll"
    assert clock.sleeps == 0, "no polling on a new kernel"
    assert verdict["at_start"]["crng_ready"] is False and verdict["at_end"]["crng_ready"] is True
    ev = evidence(tree)
    assert ev["at_start"]["crng_ready"] is False and ev["at_end"]["crng_ready"] is True
    assert ev["at_end"]["monotonic"] == 1003.0, "the kernel's view as the wait ended"
    assert ev["wait"]["blocking_call"] == "returned" and ev["wait"]["timed_out"] is False
    assert ev["wait"]["legacy_pool"] is False
    assert ev["crng_ready_at"] >= 1003.0
    assert ev["crng_ready_at"] <= ev["first_keygen_started_at"] <= ev["first_key_written_at"]
    assert ev["kernel"] == "6.6.51+rpt-rpi-v8"
    for ktype in ("ed25519", "ecdsa"):
        assert_sound_pair(tree.key(ktype))


def test_old_kernel_waits_until_entropy_avail_reaches_min_entropy(fb, tree, clock, crng, capsys,
                                                                  monkeypatch):
    tree.set_pool(avail=100, poolsize=4096)
    tree.config({"key_types": FAST_KEYS, "min_entropy": 2048})
    crng(0)

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


def test_new_kernel_ignores_min_entropy_when_crng_is_ready(fb, tree, clock, crng, capsys):
    tree.set_pool(avail=40, poolsize=256)
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["waited_seconds"] == 0
    assert clock.sleeps == 0


def test_timeout_with_continue_makes_keys_and_warns_in_every_report(fb, tree, clock, crng, capsys,
                                                                    monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 30, "on_timeout": "continue"})
    crng(float("inf"))

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
    record = committed(tree)
    assert record["provisional"] is True and record["provisional_reason"] == "crng not ready"
    assert verdict["provisional"] is True and verdict["action"] == "first-run"


def test_timeout_with_fail_makes_no_keys_and_exits_nonzero(fb, tree, clock, crng, capsys, monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 5, "on_timeout": "fail"})
    crng(float("inf"))
    (tree.root / "etc/ssh/ssh_host_ed25519_key").write_text("baked into the image")

    code, verdict, out = run(fb, tree, capsys)

    assert code == fb.main.EXIT_TIMEOUT_FAIL == 1
    assert verdict["status"] == "failed"
    assert verdict["error"] == "entropy wait timed out (crng not ready)"
    assert verdict["fingerprints"] == []
    assert "ENTROPI-FINGERPRINT" not in out
    assert sorted(os.listdir(str(tree.root / "etc/ssh"))) == [], "no host key may exist"
    assert not tree.committed.exists()
    assert evidence(tree)["status"] == "failed"
    assert "FAILED: entropy wait timed out" in (tree.out / "ssh_host_fingerprints.txt").read_text()
    assert "sshd is kept down" in (tree.root / "etc/issue").read_text()


def test_failed_run_is_retried_at_next_boot_and_then_succeeds(fb, tree, clock, crng, capsys,
                                                             monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 5, "on_timeout": "fail"})
    crng(float("inf"))
    assert run(fb, tree, capsys)[0] == 1
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok" and len(verdict["fingerprints"]) == 2
    assert "FAILED" not in (tree.root / "etc/issue").read_text()


def test_no_hwrng_is_recorded_and_keys_are_still_made(fb, tree, clock, crng, capsys, monkeypatch):
    tree.set_hwrng(None)
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["hwrng"] is None
    ev = evidence(tree)
    assert ev["hwrng"] == {"present": False, "available": [], "current": None, "sysfs": False}
    assert ev["at_start"]["rngd_running"] is False


def test_evidence_records_hwrng_rngd_uptime_and_per_key_timings(fb, tree, clock, crng, capsys,
                                                                monkeypatch):
    tree.start_rngd()
    crng(0)

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
    assert not tree.committed.exists()


# --- publication -----------------------------------------------------------------


def test_published_fingerprints_equal_ssh_keygen_of_the_keys(fb, tree, clock, crng, capsys, monkeypatch):
    crng(0)

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


def test_known_hosts_is_accepted_by_ssh_keygen_for_the_hostname(fb, tree, clock, crng, capsys,
                                                                monkeypatch):
    crng(0)
    run(fb, tree, capsys)
    known_hosts = tree.out / "known_hosts"

    found = keygen("-F", "raspberrypi", "-f", str(known_hosts))

    assert found.returncode == 0, found.stderr
    assert "ssh-ed25519 " in found.stdout and "ecdsa-sha2-nistp256 " in found.stdout
    for ktype in ("ed25519", "ecdsa"):
        blob = tree.key(ktype).with_suffix(".pub").read_text().split()[1]
        assert blob in found.stdout, f"{ktype} key missing from known_hosts"
    assert keygen("-F", "otherhost", "-f", str(known_hosts)).returncode != 0


def test_issue_block_is_replaced_not_duplicated_on_a_second_run(fb, tree, clock, crng, capsys,
                                                                monkeypatch):
    crng(0)
    run(fb, tree, capsys)
    run(fb, tree, capsys)

    issue = (tree.root / "etc/issue").read_text()

    assert issue.count(fb.publish.ISSUE_BEGIN) == 1 and issue.count(fb.publish.ISSUE_END) == 1
    assert issue.count("Debian GNU/Linux 12") == 1


def run_with_boot_hostname(fb, tree, clock, crng, capsys, monkeypatch, text):
    """One first boot with ``text`` in the boot partition's entropi/hostname."""
    tree.out.mkdir(parents=True)
    (tree.out / "hostname").write_text(text)
    crng(0)
    return run(fb, tree, capsys)


def test_hostname_from_boot_partition_is_applied_before_keys(fb, tree, clock, crng, capsys, monkeypatch):
    code, verdict, _ = run_with_boot_hostname(fb, tree, clock, crng, capsys, monkeypatch, "pi-card-07\n")

    assert code == 0 and verdict["hostname"] == "pi-card-07"
    assert (tree.root / "etc/hostname").read_text() == "pi-card-07\n"
    hosts = (tree.root / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tpi-card-07" in hosts and not any("raspberrypi" in h for h in hosts)
    assert "127.0.0.1\tlocalhost" in hosts
    assert tree.key("ed25519").with_suffix(".pub").read_text().split()[2] == "root@pi-card-07"
    assert keygen("-F", "pi-card-07", "-f", str(tree.out / "known_hosts")).returncode == 0
    assert evidence(tree)["hostname_source"] == "boot-partition"


def test_invalid_boot_hostname_is_ignored_with_a_warning(fb, tree, clock, crng, capsys, monkeypatch):
    code, verdict, _ = run_with_boot_hostname(fb, tree, clock, crng, capsys, monkeypatch, "bad_name!\n")

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


def test_missing_boot_partition_still_makes_keys_and_warns(fb, tree, clock, crng, capsys, monkeypatch):
    shutil.rmtree(str(tree.root / "boot"))
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert any("boot partition /boot/firmware does not exist" in w for w in verdict["warnings"])
    assert not (tree.root / "boot").exists(), "must not create the boot dir on the root fs"
    assert verdict["published"] == {"boot_partition": False, "issue": True}


def test_boot_hostname_is_not_read_from_an_unmounted_boot_partition(fb, tree, clock, crng, capsys, monkeypatch):
    tree.set_boot("unmounted")  # what is left in the directory is the root file system's, not the card's

    code, verdict, _ = run_with_boot_hostname(fb, tree, clock, crng, capsys, monkeypatch, "pi-card-07\n")

    assert code == 0 and verdict["hostname"] == "raspberrypi"
    assert any("/boot/firmware is not mounted" in w for w in verdict["warnings"])


def test_the_committed_set_is_written_durably_at_the_end_of_a_successful_run(fb, tree, clock, crng, capsys):
    crng(0)
    assert not tree.committed.exists()

    code, verdict, _ = run(fb, tree, capsys)

    record = committed(tree)
    assert code == 0 and record["version"] == 1 and record["keys_source"] == "made-here"
    assert record["provisional"] is False and record["made"]["crng_ready_before_keys"] is True
    assert [k["fingerprint"] for k in record["keys"]] == verdict["fingerprints"]
    for key in record["keys"]:
        pub = (tree.root / key["file"].lstrip("/")).with_suffix(".pub").read_text().split()
        assert key["public"] == " ".join(pub[:2])
        assert key["sha256"] == keygen("-lf", str(tree.root / key["file"].lstrip("/"))).stdout.split()[1]
    assert oct(tree.committed.stat().st_mode & 0o777) == "0o644"


# --- the keys made ------------------------------------------------------------------


def test_default_config_makes_ed25519_ecdsa521_rsa4096(fb, tree, clock, crng, capsys, monkeypatch):
    (tree.root / "etc/entropi/firstboot.json").unlink()
    crng(0)

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
    assert PROGRAM.read_text().startswith("#!/usr/bin/python3 -IS\n"), "isolated, no site: it starts faster"
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


def test_ssh_keygen_failure_fails_the_run_with_its_message(fb, tree, clock, crng, capsys, monkeypatch,
                                                           tmp_path):
    fake = tmp_path / "ssh-keygen"
    fake.write_text("#!/bin/sh\necho 'boom: no randomness' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fb.keys, "SSH_KEYGEN", str(fake))
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == fb.main.EXIT_ERROR == 3
    assert verdict["status"] == "failed"
    assert re.search(r"ssh-keygen .*-t ed25519.* failed \(exit 1\): boom: no randomness", verdict["error"])
    assert not tree.key("ed25519").exists()
    assert not tree.committed.exists()
    assert verdict["fingerprints"] == [], "sshd stays down: no set is in force"
    assert "FAILED: ssh-keygen" in (tree.root / "etc/issue").read_text()


def test_programs_are_run_by_absolute_path_never_through_path(fb, tree, clock, crng, capsys, monkeypatch,
                                                              tmp_path):
    """A PATH holding a hostile ssh-keygen changes nothing: the program runs /usr/bin/ssh-keygen."""
    trap = tmp_path / "bin"
    trap.mkdir()
    (trap / "ssh-keygen").write_text("#!/bin/sh\nexit 42\n")
    (trap / "ssh-keygen").chmod(0o755)
    monkeypatch.setenv("PATH", str(trap))
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert fb.keys.SSH_KEYGEN == "/usr/bin/ssh-keygen"
    sources = "".join(path.read_text() for path in program_sources())
    assert "hostname\"," not in sources and '["ssh-keygen"' not in sources
