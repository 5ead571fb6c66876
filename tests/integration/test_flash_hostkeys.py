"""`invoke flash --host-keys` on loop devices: each card's keys and committed set on its ext4 root (bytes,
modes, owner), known_hosts and SSHFP records on the host, read-back, the private directory gone, the
card's guard keeping the keys; refusals before anything is written; nothing new without --host-keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from firstboot.tests.helpers import PROGRAM, Tree
from stages.flash import hostkeys
from stages.flash.fleet import flash_cards
from stages.flash.hostkeys import plan_host_keys
from stages.image.ext4 import ext4_at, file_mode, list_dir, read_file
from tests.conftest import need_root, need_tools
from tests.support.flash_sample import MIB, make_sample_image
from tests.support.hostkey_cards import FAST_KEY_TYPES, attach, flash_loop_cards, write_manifest

pytestmark = pytest.mark.integration
ROOT_OFFSET = 17 * MIB
KEY_FILES = ["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flash tests' 64 MiB Pi-style image, with a manifest naming two fast key types."""
    need_root()
    need_tools("losetup", "bmaptool", "parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "debugfs", "ssh-keygen")
    img = make_sample_image(tmp_path_factory.mktemp("hostkeys") / "sample.img")
    write_manifest(img, FAST_KEY_TYPES)
    return img


def root_of(card: Path) -> str:
    return ext4_at(card, ROOT_OFFSET)


def blank(path: Path) -> bool:
    with open(path, "rb") as f:
        return not any(f.read(4 * MIB))


def guard_on(card: Path, base: Path) -> dict[str, object]:
    """Run the card's first-boot guard (the launcher as shipped) on a tree holding what the card's root has
    of it: /etc/ssh's keys and the committed set, with modes; its verdict."""
    tree = Tree(base)
    tree.config({"key_types": FAST_KEY_TYPES})
    for path in [*(f"/etc/ssh/{n}" for n in KEY_FILES), "/var/lib/entropi/committed.json"]:
        dest = tree.root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_file(root_of(card), path))
        mode = file_mode(root_of(card), path)
        assert mode is not None
        dest.chmod(mode[0] & 0o7777)
    out = subprocess.run([sys.executable, str(PROGRAM), *tree.args()], capture_output=True, text=True).stdout
    verdict = json.loads(next(line for line in out.splitlines() if line.startswith("ENTROPI-FIRSTBOOT "))[18:])
    assert isinstance(verdict, dict)
    return verdict


def test_two_cards_get_their_own_keys_on_ext4_in_known_hosts_and_sshfp_and_their_guard_keeps_them(
        sample: Path, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    (tmp_path / "known_hosts").write_text("gateway ssh-ed25519 AAAAKEEP\npi-01 ssh-rsa AAAAOLD\n")
    flashed = flash_loop_cards(sample, tmp_path, 2, hostname="pi-{n:02}", tmp_root=private)

    assert flashed.hostnames == ["pi-01", "pi-02"]
    assert list(private.iterdir()) == [], "the private directory is removed"
    known = flashed.known_hosts.read_text().splitlines()
    assert known[0] == "gateway ssh-ed25519 AAAAKEEP" and "pi-01 ssh-rsa AAAAOLD" not in known
    zone = flashed.sshfp.read_text()
    for card, name in zip(flashed.cards, flashed.hostnames, strict=True):
        fs = root_of(card)
        assert sorted(list_dir(fs, "/etc/ssh")) == KEY_FILES
        for key in KEY_FILES:
            assert file_mode(fs, f"/etc/ssh/{key}") == (0o100644 if key.endswith(".pub") else 0o100600, 0, 0)
        publics = [" ".join(read_file(fs, f"/etc/ssh/{k}").decode().split()[:2]) for k in KEY_FILES if "pub" in k]
        assert sorted(line.split(" ", 1)[1] for line in known if line.startswith(f"{name} ")) == sorted(publics)
        record = json.loads(read_file(fs, "/var/lib/entropi/committed.json"))
        assert record["keys_source"] == "flash" and sorted(k["public"] for k in record["keys"]) == sorted(publics)
        assert file_mode(fs, "/var/lib/entropi/committed.json") == (0o100644, 0, 0)
        assert len(re.findall(rf"^{name} IN SSHFP [34] [12] [0-9a-f]+$", zone, re.M)) == 4
        verdict = guard_on(card, tmp_path / f"guard-{name}")
        assert verdict["action"] == "republished" and verdict["keys_source"] == "flash", verdict
        assert str(verdict["done"]).startswith("keys from flash: kept them")
    result = flashed.results[0]
    assert [k.fingerprint for k in result.host_keys] == [k["fingerprint"] for k in json.loads(
        read_file(root_of(flashed.cards[0]), "/var/lib/entropi/committed.json"))["keys"]]
    assert "PRIVATE" not in repr(flashed.results)


def test_a_key_that_does_not_read_back_fails_that_card_and_keeps_it_out_of_known_hosts(
        sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = hostkeys.read_file
    monkeypatch.setattr(hostkeys, "read_file",
                        lambda fs, path: b"x" if path.endswith("ed25519_key") else real(fs, path))
    plan = plan_host_keys(sample, known_hosts=tmp_path / "known_hosts", sshfp=tmp_path / "sshfp.zone")
    with ExitStack() as stack:
        dev = attach(stack, tmp_path / "card.img", 64 * MIB)
        (result,) = flash_cards(sample, [dev], yes=True, force_non_removable=True, hostname="pi-09", host_keys=plan)
    assert not result.verified and result.host_keys == ()
    assert result.error == (f"error: {dev}: /etc/ssh/ssh_host_ed25519_key does not read back as written on "
                            "partition 2 (hint: the card may be failing)")
    assert not (tmp_path / "known_hosts").exists()


@pytest.mark.parametrize("case", ["known_hosts_dir", "known_hosts_nodir", "no_manifest", "no_hostname"])
def test_refusals_come_before_anything_is_written(sample: Path, tmp_path: Path, case: str) -> None:
    import tasks

    image, options = sample, {"known_hosts": str(tmp_path / "known_hosts"), "hostname": "pi-01"}
    if case == "known_hosts_dir":
        (tmp_path / "known_hosts").mkdir()
    elif case == "known_hosts_nodir":
        options["known_hosts"] = str(tmp_path / "nowhere" / "known_hosts")
    elif case == "no_manifest":
        image = tmp_path / "bare.img"
        os.link(sample, image)
    else:
        options["hostname"] = ""
    pattern = {"known_hosts_dir": r"known_hosts: --known-hosts: not a regular file \(hint: ",
               "known_hosts_nodir": r"--known-hosts: directory .*nowhere does not exist \(hint: ",
               "no_manifest": r"bare\.img: has no manifest .*bare\.manifest\.json.*\(hint: flash an image built by",
               "no_hostname": r"--host-keys needs a host name per card .*\(hint: add --hostname"}[case]
    with ExitStack() as stack:
        dev = attach(stack, tmp_path / "card.img", 64 * MIB)
        with pytest.raises(Exit) as refused:
            tasks.flash(Context(), image=str(image), device=[str(dev)], yes=True, force_non_removable=True,
                        host_keys=True, sshfp=str(tmp_path / "sshfp.zone"), **options)
    message = str(refused.value.message)
    assert refused.value.code == 2 and "\n" not in message and re.search(rf"^error: .*{pattern}", message), message
    assert blank(tmp_path / "card.img") and not (tmp_path / "sshfp.zone").exists()


def test_without_host_keys_nothing_changes(sample: Path, tmp_path: Path) -> None:
    with ExitStack() as stack:
        dev = attach(stack, tmp_path / "card.img", 64 * MIB)
        (result,) = flash_cards(sample, [dev], yes=True, force_non_removable=True, hostname="pi-03")
    assert result.verified and result.host_keys == ()
    assert list_dir(root_of(tmp_path / "card.img"), "/etc/ssh") == []
    assert read_file(root_of(tmp_path / "card.img"), "/var/lib/entropi/committed.json") == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.img"]
