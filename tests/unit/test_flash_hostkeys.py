"""--host-keys without a card: the plan and its refusals, the private directory, known_hosts and SSHFP
records, and the committed set the card's guard reads (keys made by the real ssh-keygen)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firstboot.entropi_firstboot import committed, sshkey
from stages.core.errors import UserError
from stages.flash.hostkeys import HostKeys, PublicKey, make_keys, manifest_path, need_names, plan_host_keys, private_dir
from stages.flash.known_hosts import merged_known_hosts, merged_zone, record_on_host, sshfp_records
from tests.support.hostkey_cards import write_manifest

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
ED = PublicKey("ed25519", None, "/etc/ssh/ssh_host_ed25519_key",
               "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJh5448725M+qMR9n++prVWrySDaTczk2luv5Swy41wn",
               "SHA256:jH6i2Jggfa3ajvzPw3xZKgzGVf0EWXDTf8ViTp8LL20", "256 SHA256:jH6i... root@pi-01 (ED25519)")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "lab.img"
    img.write_bytes(b"")
    write_manifest(img, [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}, {"type": "rsa", "bits": 2048}])
    return img


def plan(image: Path, **kw: Path) -> HostKeys:
    return plan_host_keys(image, known_hosts=kw.get("known_hosts", image.parent / "known_hosts"),
                          sshfp=kw.get("sshfp", image.parent / "sshfp.zone"))


@pytest.mark.parametrize("name", ["lab.img", "lab.img.xz", "lab.img.zst"])
def test_the_manifest_is_found_beside_a_raw_or_compressed_image(tmp_path: Path, name: str) -> None:
    assert manifest_path(tmp_path / name) == tmp_path / "lab.manifest.json"


def test_the_key_types_come_from_the_manifest_in_its_order_bits_none_for_ed25519(image: Path) -> None:
    assert plan(image).key_types == (("ed25519", None), ("ecdsa", 256), ("rsa", 2048))


@pytest.mark.parametrize("manifest,pattern", [
    (None, r"^error: .*lab\.img: has no manifest .*lab\.manifest\.json, so the key types its first boot expects "
           r"are unknown \(hint: flash an image built by entropi .*or drop --host-keys\)$"),
    ("{}", r"^error: .*lab\.manifest\.json: does not record firstboot\.settings\.key_types \(KeyError"),
    ("not json", r"^error: .*lab\.manifest\.json: does not record .* \(JSONDecodeError"),
    ('{"firstboot": {"settings": {"key_types": [{"type": "dsa"}]}}}',
     r"^error: .*lab\.manifest\.json: firstboot\.settings\.key_types: key_types: unsupported type 'dsa'"),
])
def test_an_image_without_a_usable_manifest_is_one_line_naming_the_fix(tmp_path: Path, manifest: str | None,
                                                                         pattern: str) -> None:
    img = tmp_path / "lab.img"
    if manifest is not None:
        manifest_path(img).write_text(manifest)
    with pytest.raises(UserError) as e:
        plan(img)
    assert "\n" not in e.value.render()
    assert re.search(pattern, e.value.render()), e.value.render()


@pytest.mark.parametrize("where,pattern", [
    ("dir", r"known_hosts: --known-hosts: not a regular file \(hint: give --known-hosts a file in an existing"),
    ("missing/known_hosts", r"--known-hosts: directory .*missing does not exist \(hint: give --known-hosts a file"),
])
def test_a_bad_known_hosts_path_is_refused(image: Path, where: str, pattern: str) -> None:
    target = image.parent / where
    if where == "dir":
        target = image.parent / "known_hosts"
        target.mkdir()
    with pytest.raises(UserError, match=pattern):
        plan(image, known_hosts=target)


def test_host_keys_need_a_host_name_per_card() -> None:
    assert need_names(["pi-01", "pi-02"]) == ["pi-01", "pi-02"]
    with pytest.raises(UserError, match=r"--host-keys needs a host name per card .*\(hint: add --hostname NAME"):
        need_names([None])


def test_the_private_directory_is_0700_and_gone_afterwards_also_after_an_interrupt(tmp_path: Path) -> None:
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with private_dir(tmp_path) as d:
            seen.append(d)
            assert d.parent == tmp_path and (d.stat().st_mode & 0o777) == 0o700
            (d / "ssh_host_ed25519_key").write_text("secret")
            raise KeyboardInterrupt
    assert not seen[0].exists() and list(tmp_path.iterdir()) == []


def test_a_name_s_known_hosts_lines_are_replaced_and_every_other_line_kept() -> None:
    salt = os.urandom(20)
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(),
                               base64.b64encode(hmac.new(salt, b"pi-01", hashlib.sha1).digest()).decode())
    old = "\n".join(["# mine", "pi-01 ssh-rsa OLD", "pi-010 ssh-rsa KEEP", "gw,pi-01 ssh-ed25519 OLD2",
                     f"{hashed} ssh-ed25519 OLD3", "@revoked pi-01 ssh-rsa BAD", "pi-02 ssh-rsa OTHER"]) + "\n"
    new = merged_known_hosts(old, {"pi-01": [ED]})
    assert new.splitlines() == ["# mine", "pi-010 ssh-rsa KEEP", "@revoked pi-01 ssh-rsa BAD", "pi-02 ssh-rsa OTHER",
                                f"pi-01 {ED.public}"]


@needs_keygen
def test_sshfp_records_are_what_ssh_keygen_r_prints(tmp_path: Path) -> None:
    for ktype, bits in (("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"])):
        key = tmp_path / ktype
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", ktype, *bits, "-f", str(key)], check=True)
        public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        want = subprocess.run(["ssh-keygen", "-r", "pi-01", "-f", f"{key}.pub"], check=True, capture_output=True,
                              text=True).stdout.splitlines()
        assert sshfp_records("pi-01", [PublicKey(ktype, None, "", public, "", "")]) == want


def test_the_zone_keeps_other_lines_and_replaces_the_card_s_records() -> None:
    old = "$ORIGIN lab.\npi-01 IN SSHFP 4 2 00\npi-02 IN SSHFP 4 2 11\npi-01 IN A 10.0.0.1\n"
    new = merged_zone(old, {"pi-01": [ED]}).splitlines()
    assert new[:3] == ["$ORIGIN lab.", "pi-02 IN SSHFP 4 2 11", "pi-01 IN A 10.0.0.1"]
    assert [line.split()[:5] for line in new[3:]] == [["pi-01", "IN", "SSHFP", "4", "1"],
                                                       ["pi-01", "IN", "SSHFP", "4", "2"]]


def test_the_host_files_are_replaced_atomically_keeping_their_mode(image: Path) -> None:
    p = plan(image)
    p.known_hosts.write_text("other ssh-rsa KEEP\n")
    p.known_hosts.chmod(0o600)
    record_on_host(p, {"pi-01": [ED]})
    assert p.known_hosts.read_text() == f"other ssh-rsa KEEP\npi-01 {ED.public}\n"
    assert p.known_hosts.stat().st_mode & 0o777 == 0o600 and p.sshfp.stat().st_mode & 0o777 == 0o644
    assert sorted(f.name for f in image.parent.iterdir()) == ["known_hosts", "lab.img", "lab.manifest.json",
                                                              "sshfp.zone"]


@needs_keygen
def test_made_keys_and_their_committed_set_are_what_the_guard_accepts(image: Path, tmp_path: Path) -> None:
    keys, files = make_keys(plan(image), "pi-07", tmp_path)
    assert [k.type for k in keys] == ["ed25519", "ecdsa", "rsa"]
    modes = {f.path: f.mode for f in files}
    assert modes["/etc/ssh/ssh_host_rsa_key"] == 0o600 and modes["/etc/ssh/ssh_host_rsa_key.pub"] == 0o644
    record = json.loads(next(f.source for f in files if f.path == "/var/lib/entropi/committed.json").read_text())
    assert record["keys_source"] == "flash" and record["provisional"] is False
    assert [(k["type"], k["bits"]) for k in record["keys"]] == [("ed25519", None), ("ecdsa", 256), ("rsa", 2048)]
    assert committed.source_note(record) == "keys from flash"
    for key, f in zip(record["keys"], [f for f in files if f.path.endswith("_key")], strict=True):
        assert key["file"] == f.path and key["fingerprint"].endswith(f"root@pi-07 ({key['type'].upper()})")
        blob = sshkey.parse_public(key["public"])[1]
        assert key["sha256"] == sshkey.fingerprint(blob)
        assert sshkey.check_private(f.source.read_text(), blob) is None
    assert "PRIVATE" not in json.dumps(record)


def test_sigterm_while_keys_are_in_the_private_directory_removes_it(tmp_path: Path) -> None:
    import signal

    from stages.core.errors import Interrupted

    seen = []
    with pytest.raises(Interrupted):
        with private_dir(tmp_path) as d:
            seen.append(d)
            os.kill(os.getpid(), signal.SIGTERM)
    assert not seen[0].exists() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
