"""The guard at every boot: an unchanged card costs milliseconds and no ssh-keygen; keys that
differ from the committed set are all made again, with one finding each; provisional keys are
replaced once the crng is ready; publication never holds sshd back and is retried.

In-process runs of the program against helpers.Tree, with the real ssh-keygen.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from firstboot.tests.helpers import (
    FAST_KEYS,
    SSH_KEYGEN,
    assert_sound_pair,
    committed,
    evidence,
    make_pair,
    run,
)

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")
TYPES = ("ed25519", "ecdsa")


def publics(tree) -> dict:
    return {t: tree.pub(t).read_text().split()[1] for t in TYPES if tree.pub(t).exists()}


@pytest.fixture
def first(fb, tree, clock, crng, capsys):
    """A card after its first boot: keys made, committed and published."""
    crng(0)
    code, verdict, _ = run(fb, tree, capsys)
    assert code == 0 and verdict["action"] == "first-run", verdict
    return verdict


def count_keygen(fb, monkeypatch) -> list:
    calls: list = []
    real = fb.keys.run_keygen
    monkeypatch.setattr(fb.keys, "run_keygen", lambda args: calls.append(args) or real(args))
    return calls


# --- an unchanged card -------------------------------------------------------------


def test_an_unchanged_boot_takes_under_200_ms_runs_no_ssh_keygen_and_writes_nothing(
        fb, tree, first, capsys, monkeypatch, clock):
    calls = count_keygen(fb, monkeypatch)
    writes: list = []
    monkeypatch.setattr(fb.fileops.FileOps, "tick", lambda self, what: writes.append(what))
    monkeypatch.setattr(fb.seams, "monotonic", time.monotonic)  # real time for guard_seconds

    began = time.perf_counter()
    code, verdict, out = run(fb, tree, capsys)
    seconds = time.perf_counter() - began

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["action"] == "unchanged" and verdict["findings"] == []
    assert seconds < 0.2 and verdict["guard_seconds"] < 0.2, (seconds, verdict["guard_seconds"])
    assert calls == [], "an unchanged boot runs no ssh-keygen"
    assert writes == [], "an unchanged boot writes nothing"
    assert verdict["fingerprints"] == first["fingerprints"]
    assert "ENTROPI-DONE unchanged: nothing to do" in out
    assert out.count("ENTROPI-FINGERPRINT ") == 2, "the fingerprints are on the console at every boot"
    assert verdict["keys_source"] == "made-here" and verdict["provisional"] is False
    assert verdict["waited_seconds"] == 0.0 and verdict["crng_ready_before_keys"] is True


# --- keys that differ from the committed set -----------------------------------------


def replace_ed25519(tree, tmp_path) -> str:
    make_pair(tmp_path / "other")
    shutil.copy(str(tmp_path / "other"), str(tree.key("ed25519")))
    shutil.copy(str(tmp_path / "other.pub"), str(tree.pub("ed25519")))
    return "ssh_host_ed25519_key: replaced (committed SHA256:"


def add_rsa(tree, tmp_path) -> str:
    make_pair(tree.key("rsa"), "rsa")
    return "ssh_host_rsa_key: added (not in the committed set)"


def add_unknown_type(tree, tmp_path) -> str:
    (tree.root / "etc/ssh/ssh_host_xmss_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tree.root / "etc/ssh/ssh_host_xmss_key.pub").write_text("ssh-xmss@openssh.com AAAA root@x\n")
    return "ssh_host_xmss_key: added (not in the committed set)"


def remove_ecdsa(tree, tmp_path) -> str:
    tree.key("ecdsa").unlink()
    tree.pub("ecdsa").unlink()
    return "ssh_host_ecdsa_key: missing"


def empty_ed25519(tree, tmp_path) -> str:
    tree.key("ed25519").write_bytes(b"")  # what ssh-keygen -A leaves after a reset, forever
    return "ssh_host_ed25519_key: empty"


def truncate_ed25519(tree, tmp_path) -> str:
    data = tree.key("ed25519").read_text().splitlines()
    tree.key("ed25519").write_text("\n".join(data[:2] + data[-1:]) + "\n")
    return "ssh_host_ed25519_key: private key damaged"


def expose_ecdsa(tree, tmp_path) -> str:
    tree.key("ecdsa").chmod(0o644)
    return "ssh_host_ecdsa_key: private key readable by others (mode 0644)"


def drop_ecdsa_pub(tree, tmp_path) -> str:
    tree.pub("ecdsa").unlink()
    return "ssh_host_ecdsa_key: public key missing"


def unknown_type_in_pub(tree, tmp_path) -> str:
    tree.pub("ed25519").write_text("ssh-dss AAAAB3NzaC1kc3MAAAA= root@x\n")
    return "ssh_host_ed25519_key: public key unusable"


def private_of_another_key(tree, tmp_path) -> str:
    make_pair(tmp_path / "other")
    shutil.copy(str(tmp_path / "other"), str(tree.key("ed25519")))  # the .pub stays the committed one
    return "ssh_host_ed25519_key: private key does not match its public key"


def unreadable_ed25519(tree, tmp_path) -> str:
    tree.key("ed25519").write_bytes(b"\xff\xfe not ascii")
    return "ssh_host_ed25519_key: unreadable"


def key_is_a_symlink(tree, tmp_path) -> str:
    shared = tmp_path / "shared_key"
    shutil.copy(str(tree.key("ecdsa")), str(shared))
    tree.key("ecdsa").unlink()
    tree.key("ecdsa").symlink_to(shared)  # the same key, kept elsewhere: not entropi's file
    return "ssh_host_ecdsa_key: not a regular file"


def leftover(tree, tmp_path) -> str:
    (tree.root / "etc/ssh/.entropi-ssh_host_rsa_key.tmp").write_text("half")
    return ".entropi-ssh_host_rsa_key.tmp: left over by an interrupted run"


def other_key_types_configured(tree, tmp_path) -> str:
    tree.config({"key_types": [{"type": "ed25519"}, {"type": "ecdsa", "bits": 384}]})
    return "key types configured ed25519 ecdsa-384, committed ed25519 ecdsa-256"


CHANGES = [replace_ed25519, add_rsa, add_unknown_type, remove_ecdsa, empty_ed25519, truncate_ed25519,
           expose_ecdsa, drop_ecdsa_pub, unknown_type_in_pub, private_of_another_key, unreadable_ed25519,
           key_is_a_symlink, leftover, other_key_types_configured]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
def test_any_difference_from_the_committed_set_makes_all_keys_again_and_says_what_was_found(
        fb, tree, first, capsys, tmp_path, change):
    before = {t: tree.pub(t).read_text().split()[1] for t in TYPES}
    expected = change(tree, tmp_path)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["action"] == "replaced"
    assert any(f.startswith(expected) for f in verdict["findings"]), verdict["findings"]
    assert any(line.startswith("ENTROPI-FOUND " + expected) for line in out.splitlines()), out
    assert "ENTROPI-DONE replaced: made 2 fresh host keys" in out
    after = publics(tree)
    assert all(after[t] != before[t] for t in TYPES), "every key is made again, not only the one that changed"
    for ktype in TYPES:
        assert_sound_pair(tree.key(ktype))
    assert sorted(p.name for p in (tree.root / "etc/ssh").iterdir()) == sorted(
        n for t in TYPES for n in (f"ssh_host_{t}_key", f"ssh_host_{t}_key.pub")), "nothing else is left"
    assert [k["sha256"] for k in committed(tree)["keys"]] == [fp.split()[1] for fp in verdict["fingerprints"]]
    assert (tree.out / "ssh_host_fingerprints.txt").read_text().splitlines() == verdict["fingerprints"]
    assert evidence(tree)["findings"] == verdict["findings"]
    assert run(fb, tree, capsys)[1]["action"] == "unchanged", "the new set is accepted at the next boot"


def test_a_key_that_cannot_be_removed_keeps_sshd_down_and_says_why(fb, tree, first, capsys):
    tree.key("ecdsa").unlink()
    tree.key("ecdsa").mkdir()

    code, verdict, _ = run(fb, tree, capsys)

    assert code == fb.main.EXIT_ERROR and verdict["status"] == "failed"
    assert "ssh_host_ecdsa_key: not a regular file" in verdict["findings"]
    assert "ssh_host_ecdsa_key" in verdict["error"] and verdict["fingerprints"] == []
    assert "sshd is kept down" in (tree.root / "etc/issue").read_text()


def test_keys_found_before_the_first_commit_are_never_trusted_even_as_sound_pairs(fb, tree, clock, crng, capsys):
    """Keys baked into the image, or made by another tool during an interrupted first run."""
    make_pair(tree.key("ed25519"))
    baked = tree.pub("ed25519").read_text().split()[1]
    (tree.root / "etc/ssh/ssh_host_dsa_key").write_text("old")
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "first-run"
    assert verdict["findings"] == ["nothing committed yet: first run",
                                   "ssh_host_dsa_key: present before the first run",
                                   "ssh_host_ed25519_key: present before the first run"]
    assert tree.pub("ed25519").read_text().split()[1] != baked
    assert not (tree.root / "etc/ssh/ssh_host_dsa_key").exists()
    reasons = {r["path"]: r["reason"] for r in evidence(tree)["removed"]}
    assert reasons[str(tree.key("ed25519"))] == "present before the first run"


def test_a_damaged_committed_record_makes_the_keys_again(fb, tree, first, capsys):
    tree.committed.write_text('{"version": 1, "keys": [{"type": "ed25519"}]}')

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "replaced"
    assert verdict["findings"][0].startswith("/var/lib/entropi/committed.json is damaged")
    assert verdict["fingerprints"] != first["fingerprints"]


# --- provisional keys ------------------------------------------------------------------


def test_provisional_keys_stay_while_the_crng_is_not_ready_and_are_replaced_once_it_is(
        fb, tree, clock, crng, capsys):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 30, "on_timeout": "continue"})
    crng(float("inf"))
    code, made, _ = run(fb, tree, capsys)
    assert code == 0 and made["status"] == "timeout-continue" and made["provisional"] is True
    weak = publics(tree)

    # A later boot whose crng is still not ready when the guard starts: they stay, loudly.
    code, kept, _ = run(fb, tree, capsys)
    assert code == 0 and kept["action"] == "unchanged" and kept["provisional"] is True
    assert any("PROVISIONAL" in w for w in kept["warnings"]), kept["warnings"]
    assert publics(tree) == weak

    # The first boot whose crng is ready before the guard runs replaces and republishes them.
    crng(0)
    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["action"] == "provisional-replaced" and verdict["provisional"] is False
    assert any("provisional" in f for f in verdict["findings"]), verdict["findings"]
    assert "ENTROPI-DONE provisional-replaced: made 2 fresh host keys" in out
    assert verdict["crng_ready_before_keys"] is True
    new = publics(tree)
    assert all(new[t] != weak[t] for t in TYPES)
    assert committed(tree)["provisional"] is False
    published = (tree.out / "ssh_host_fingerprints.txt").read_text()
    assert not published.startswith("#") and published.splitlines() == verdict["fingerprints"]
    assert "WARNING" not in (tree.root / "etc/issue").read_text()
    assert run(fb, tree, capsys)[1]["action"] == "unchanged"


def test_a_blocking_call_that_never_returns_is_bounded_by_wait_timeout(fb, tree, clock, crng, capsys):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 45, "on_timeout": "fail"})
    kernel = crng(float("inf"))

    code, verdict, _ = run(fb, tree, capsys)

    assert code == fb.main.EXIT_TIMEOUT_FAIL and verdict["status"] == "failed"
    assert verdict["waited_seconds"] == 45.0
    assert kernel.blocking_calls == 1 and sum(kernel.waits) == 45.0
    assert max(kernel.waits) <= fb.entropy.PROGRESS_EVERY, "progress is said while waiting"
    assert evidence(tree)["wait"]["blocking_call"] == "still blocked at the timeout"
    assert verdict["at_start"]["crng_ready"] is False and verdict["at_end"]["crng_ready"] is False


def test_old_kernel_waits_for_the_crng_then_for_the_level(fb, tree, clock, crng, capsys):
    tree.set_pool(avail=100, poolsize=4096)
    tree.config({"key_types": FAST_KEYS, "min_entropy": 1000})
    crng(1002.0)
    clock.hooks.append(lambda c: tree.set_pool(avail=100 + 300 * c.sleeps, poolsize=4096))

    code, verdict, _ = run(fb, tree, capsys)

    ev = evidence(tree)
    assert code == 0 and verdict["status"] == "ok"
    assert ev["crng_ready_at"] == 1002.0 and ev["entropy_level_reached_at"] == 1002.6
    assert verdict["waited_seconds"] == 2.6 and clock.sleeps == 3
    assert ev["entropy_level_reached_at"] <= ev["first_keygen_started_at"]


# --- publication -----------------------------------------------------------------------


@pytest.mark.parametrize("state, problem", [("ro", "is mounted read-only"), ("unmounted", "is not mounted")])
def test_a_boot_partition_that_cannot_be_written_never_holds_sshd_back_and_is_published_next_boot(
        fb, tree, clock, crng, capsys, state, problem):
    tree.set_boot(state)
    crng(0)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok" and len(verdict["fingerprints"]) == 2
    assert verdict["published"] == {"boot_partition": False, "issue": True}
    assert any(problem in w and "sshd is not held back" in w for w in verdict["warnings"]), verdict["warnings"]
    assert "ENTROPI-FINGERPRINT " in out
    assert not tree.out.exists(), "nothing written into the directory of an unwritable partition"
    for ktype in TYPES:
        assert_sound_pair(tree.key(ktype))

    tree.set_boot("rw")
    code, again, out = run(fb, tree, capsys)

    assert code == 0 and again["action"] == "republished"
    assert again["fingerprints"] == verdict["fingerprints"], "the same keys, published now"
    assert any("not published as committed" in f for f in again["findings"]), again["findings"]
    assert (tree.out / "ssh_host_fingerprints.txt").read_text().splitlines() == verdict["fingerprints"]
    assert again["published"] == {"boot_partition": True, "issue": True}
    assert run(fb, tree, capsys)[1]["action"] == "unchanged"


def test_a_boot_partition_that_fails_writes_is_a_warning(fb, tree, clock, crng, capsys):
    tree.out.parent.mkdir(parents=True, exist_ok=True)
    tree.out.write_text("a file where the directory belongs")
    crng(0)

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok"
    assert verdict["published"]["boot_partition"] is False
    assert any("cannot publish on the boot partition" in w for w in verdict["warnings"]), verdict["warnings"]


def test_a_new_host_name_or_an_edited_issue_is_republished_without_new_keys(fb, tree, first, capsys):
    (tree.root / "etc/hostname").write_text("pi-card-09\n")
    (tree.root / "etc/issue").write_text("Debian GNU/Linux 12 \\n \\l\n")

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "republished"
    assert verdict["fingerprints"] == first["fingerprints"]
    assert sorted(verdict["findings"]) == [
        "/boot/firmware/entropi/known_hosts: not published as committed",
        "/etc/issue: the fingerprint block differs from the committed set"]
    known = (tree.out / "known_hosts").read_text().splitlines()
    assert all(line.startswith("pi-card-09 ") for line in known)
    assert "SSH host key fingerprints of pi-card-09:" in (tree.root / "etc/issue").read_text()


# --- short writes ------------------------------------------------------------------------


def test_a_write_of_one_byte_at_a_time_is_written_to_the_end(fb, tmp_path, monkeypatch):
    sizes: list = []

    def one_byte(fd, data):
        sizes.append(len(data))
        return os.write(fd, data[:1])

    monkeypatch.setattr(fb.seams, "write", one_byte)
    text = "ssh-ed25519 AAAA root@pi\n" * 3

    fb.fileops.FileOps(None).write_atomic(str(tmp_path / "known_hosts"), text)

    assert (tmp_path / "known_hosts").read_text() == text
    assert len(sizes) == len(text.encode()), "one call per byte, each asked for the rest"
    assert sizes[0] == len(text.encode()) and sizes[-1] == 1


def test_an_atomic_write_fsyncs_the_file_under_its_new_name_before_its_directory(fb, tmp_path):
    """The other order left a torn file on vfat at a power cut between the two fsyncs
    (tests/integration/test_power_cut.py); a millisecond guard of the order."""
    done: list = []

    class Recording(fb.fileops.FileOps):
        def tick(self, what):
            done.append(what.replace(str(tmp_path), "DIR"))

    Recording(None).write_atomic(str(tmp_path / "known_hosts"), "host ssh-ed25519 AAAA\n")

    assert done == ["write DIR/.entropi-known_hosts.tmp", "fsync DIR/.entropi-known_hosts.tmp",
                    "rename DIR/.entropi-known_hosts.tmp -> DIR/known_hosts", "fsync DIR/known_hosts", "fsync dir DIR"]


def test_a_write_that_makes_no_progress_raises_and_keeps_the_old_file(fb, tmp_path, monkeypatch):
    good = tmp_path / "known_hosts"
    good.write_text("the good one\n")
    monkeypatch.setattr(fb.seams, "write", lambda fd, data: 0)

    with pytest.raises(OSError, match="short write: 0 of 12 bytes"):
        fb.fileops.FileOps(None).write_atomic(str(good), "a new one!!\n")

    assert good.read_text() == "the good one\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts"], "no temporary file is left"


def test_short_writes_while_publishing_are_warnings_and_the_published_files_stay_whole(
        fb, tree, first, capsys, monkeypatch):
    (tree.root / "etc/hostname").write_text("pi-card-09\n")  # known_hosts must be written again
    old = (tree.out / "known_hosts").read_text()
    monkeypatch.setattr(fb.seams, "write", lambda fd, data: os.write(fd, data[: len(data) // 2]) if len(data) > 8
                        else 0)  # a partition that fills up part way

    code, verdict, _ = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "republished"
    assert verdict["published"]["boot_partition"] is False
    assert any("short write" in w for w in verdict["warnings"]), verdict["warnings"]
    assert (tree.out / "known_hosts").read_text() == old, "never a truncated known_hosts"
    assert not [p for p in tree.root.rglob(".entropi-*")], "no temporary file is left"


# --- the mount table ---------------------------------------------------------------------


def test_mount_points_are_read_from_mountinfo_with_escapes_and_read_only_options(fb, tmp_path):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "boot dir").mkdir()
    (tmp_path / "proc/self/mountinfo").write_text(
        "22 1 179:2 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw\n"
        f"25 22 179:1 / {tmp_path}/boot\\040dir rw,relatime shared:5 - vfat /dev/mmcblk0p1 ro,fmask=0022\n")
    machine = fb.device.Machine(str(tmp_path), str(tmp_path / "proc"), str(tmp_path / "sys"), "/boot dir")

    assert machine.mount(str(tmp_path / "boot dir")) == ("vfat", True), "ro in the super block options"
    assert machine.mount(str(tmp_path)) is None


def test_the_verdict_line_carries_the_guards_fields(fb, tree, first):
    for field in ("action", "findings", "done", "guard_seconds", "keys_source", "provisional", "waited_seconds",
                  "at_start", "at_end", "published", "fingerprints", "status", "crng_ready_before_keys"):
        assert field in first, field
    assert set(first["at_start"]) == set(first["at_end"]) == {"uptime", "crng_ready", "entropy_avail", "poolsize"}
    assert json.loads(json.dumps(first)) == first


# --- the kernel's view as entropi-guard started the program -------------------------------


def test_a_crng_not_ready_when_the_guard_started_counts_as_a_wait_from_that_moment(fb, tree, clock, crng, capsys,
                                                                                   monkeypatch):
    """The interpreter's own start can make the kernel ready (5.18+): the guard's view decides."""
    monkeypatch.setenv("ENTROPI_GUARD_START", "10.00 6 256")  # /proc/uptime says 12.34 now
    crng(0)  # ready by the time the program looks
    code, verdict, out = run(fb, tree, capsys)
    assert code == 0 and verdict["action"] == "first-run"
    assert verdict["at_start"] == {"uptime": 10.0, "crng_ready": False, "entropy_avail": 6, "poolsize": 256}
    assert verdict["waited_seconds"] == 2.34 and verdict["crng_ready_before_keys"] is True
    assert evidence(tree)["at_start"]["seen_by"] == "entropi-guard"


def test_the_guards_view_decides_whether_provisional_keys_are_replaced(fb, tree, clock, crng, capsys, monkeypatch):
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 5, "on_timeout": "continue"})
    crng(float("inf"))
    code, verdict, _ = run(fb, tree, capsys)
    assert verdict["provisional"] is True
    crng(0)
    monkeypatch.setenv("ENTROPI_GUARD_START", "12.00 100 256")  # not ready when the guard started
    code, verdict, _ = run(fb, tree, capsys)
    assert verdict["action"] == "unchanged" and verdict["provisional"] is True
    monkeypatch.setenv("ENTROPI_GUARD_START", "12.00 256 256")  # ready before the guard ran
    code, verdict, _ = run(fb, tree, capsys)
    assert verdict["action"] == "provisional-replaced" and verdict["provisional"] is False


@pytest.mark.parametrize("value", ["", "garbage", "10.00 6", "10.00 6 4096", "99.00 6 256"])
def test_a_missing_or_unusable_guard_view_leaves_the_programs_own_look(fb, tree, clock, crng, capsys,
                                                                      monkeypatch, value):
    monkeypatch.setenv("ENTROPI_GUARD_START", value)  # 4096: the old pool; 99 s: after "now"
    crng(0)
    code, verdict, _ = run(fb, tree, capsys)
    assert verdict["at_start"]["crng_ready"] is True and verdict["waited_seconds"] == 0.0
