"""Keys made at flash time (`invoke flash --host-keys`): the card's first boot keeps them, publishes
them and says "keys from flash"; a flash key removed or changed later is replaced as any other.

The card is helpers.Tree with the keys and the committed set the flashing host writes
(committed.flash_record), made with the real ssh-keygen.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from firstboot.tests.helpers import FAST_KEYS, PROGRAM, SSH_KEYGEN, committed, evidence, keygen, run
from firstboot.tests.test_firstboot_guard import expose_ecdsa, remove_ecdsa, replace_ed25519

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")
MADE = {"by": "entropi flash", "at": "2026-11-29T12:00:00Z", "crng_ready_before_keys": True}


def flash_card(fb, tree, hostname: str = "pi-01") -> list:
    """What `invoke flash --host-keys --hostname HOSTNAME` leaves on the card's root and boot partition."""
    keys = []
    for spec in FAST_KEYS:
        private = tree.key(spec["type"])
        args = ["-t", spec["type"]] + (["-b", str(spec["bits"])] if "bits" in spec else [])
        result = keygen("-q", "-N", "", *args, "-C", "root@" + hostname, "-f", str(private))
        assert result.returncode == 0, result.stderr
        public = tree.pub(spec["type"]).read_text()
        _, blob = fb.sshkey.parse_public(public)
        keys.append({"type": spec["type"], "bits": spec.get("bits"), "file": "/etc/ssh/" + private.name,
                     "public": " ".join(public.split()[:2]), "sha256": fb.sshkey.fingerprint(blob),
                     "fingerprint": keygen("-l", "-E", "sha256", "-f", str(private)).stdout.strip()})
    tree.committed.parent.mkdir(parents=True)
    tree.committed.write_text(json.dumps(fb.committed.flash_record(keys, MADE)))
    tree.out.mkdir()
    (tree.out / "hostname").write_text(hostname + "\n")
    return keys


def test_the_first_boot_keeps_flash_keys_publishes_them_and_says_keys_from_flash(fb, tree, crng, capsys,
                                                                                 monkeypatch):
    keys = flash_card(fb, tree)
    before = {t["type"]: tree.key(t["type"]).read_bytes() for t in FAST_KEYS}
    calls: list = []
    monkeypatch.setattr(fb.keys, "run_keygen", lambda args: calls.append(args))
    crng(float("inf"))  # no entropy on the card: flash keys need none

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["status"] == "ok" and verdict["action"] == "republished", verdict
    assert calls == [], "flash keys are kept: no ssh-keygen on the card"
    assert {t["type"]: tree.key(t["type"]).read_bytes() for t in FAST_KEYS} == before
    assert verdict["keys_source"] == "flash" and verdict["waited_seconds"] == 0.0
    assert verdict["fingerprints"] == [k["fingerprint"] for k in keys]
    assert "ENTROPI-DONE republished: keys from flash: kept them and published the committed set" in out
    assert evidence(tree)["done"].startswith("keys from flash: ")
    assert evidence(tree)["committed"]["keys_source"] == "flash"
    known = (tree.out / "known_hosts").read_text().splitlines()
    assert known == ["pi-01 " + k["public"] for k in keys]
    assert "SSH host key fingerprints of pi-01 (keys from flash):" in (tree.root / "etc/issue").read_text()
    assert committed(tree)["keys_source"] == "flash", "the committed set is the flash one, unchanged"


def test_the_next_boot_with_flash_keys_is_unchanged_and_still_says_keys_from_flash(fb, tree, crng, capsys):
    flash_card(fb, tree)
    crng(0)
    run(fb, tree, capsys)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "unchanged" and verdict["findings"] == []
    assert "ENTROPI-DONE unchanged: nothing to do: the host keys are the committed set (keys from flash)" in out
    # and the guard's quick check, at the boots after, says it too
    guard = subprocess.run(["/bin/sh", str(PROGRAM.with_name("entropi-guard")), *tree.args()],
                           capture_output=True, text=True, timeout=30)
    assert guard.stdout.startswith("ENTROPI-DONE unchanged: nothing to do: the host keys are the committed set "
                                   "(quick check) (keys from flash)\n"), guard.stdout


@pytest.mark.parametrize("change", [remove_ecdsa, replace_ed25519, expose_ecdsa])
def test_a_flash_key_removed_or_changed_later_is_replaced_by_keys_made_on_the_card(
        fb, tree, crng, capsys, tmp_path, change):
    keys = flash_card(fb, tree)
    crng(0)
    run(fb, tree, capsys)  # the first boot keeps them
    expected = change(tree, tmp_path)

    code, verdict, out = run(fb, tree, capsys)

    assert code == 0 and verdict["action"] == "replaced", verdict
    assert any(f.startswith(expected) for f in verdict["findings"]), verdict["findings"]
    assert verdict["keys_source"] == "made-here" and committed(tree)["keys_source"] == "made-here"
    assert not set(verdict["fingerprints"]) & {k["fingerprint"] for k in keys}, "every key is made again"
    assert "keys from flash" not in out
