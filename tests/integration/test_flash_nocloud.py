"""cloud-init's seed on loop-device cards: --hostname and --user-data on an image with the trixie base's
NoCloud seed (one card, several at once, with --host-keys, from a compressed image), and the refusal of
--user-data for an image without one."""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from stages.core.errors import UserError
from stages.flash.fleet import flash_cards
from stages.flash.hostkeys import plan_host_keys
from stages.flash.write import flash
from stages.source.trixie_shape import BOOTFS, cmdline
from tests.conftest import need_root, need_tools
from tests.support.flash_sample import MIB, make_sample_image, trixie_boot_files
from tests.support.hostkey_cards import attach, write_manifest

pytestmark = pytest.mark.integration
CARD = 80 * MIB
USER_DATA = """#cloud-config
# A second user with a key, no password logins, a command: as Raspberry Pi Imager writes them.
manage_etc_hosts: true
users:
- name: ada
  lock_passwd: true
  ssh_authorized_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEntropiTestKeyNotARealKeyAtAll0000000000 ada@laptop
ssh_pwauth: false
runcmd:
- [systemctl, enable, --now, ssh]
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB Pi-style image whose boot partition holds the trixie base's seed and cmdline.txt, with .bmap,
    .img.zst and a manifest (for --host-keys)."""
    need_root()
    need_tools("losetup", "bmaptool", "parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mtype", "mdir", "zstd",
               "ssh-keygen", "debugfs")
    img = make_sample_image(tmp_path_factory.mktemp("nocloud") / "seeded.img", boot_files=trixie_boot_files())
    subprocess.run(["zstd", "-q", "-k", str(img)], check=True)
    write_manifest(img)
    return img


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    path = tmp_path / "user-data.yaml"
    path.write_text(USER_DATA)
    return path


def boot(card: Path, name: str) -> str:
    return subprocess.run(["mtype", "-i", f"{card}@@{MIB}", f"::{name}"], check=True, capture_output=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout.decode()


def seed_of(card: Path) -> tuple[dict[str, str], str]:
    """(meta-data as a mapping, the cmdline.txt's ds= token's instance-id)."""
    tokens = [t for t in boot(card, "cmdline.txt").split() if t.startswith("ds=")]
    assert len(tokens) == 1 and tokens[0].startswith("ds=nocloud;i="), tokens
    return yaml.safe_load(boot(card, "meta-data")), tokens[0].removeprefix("ds=nocloud;i=")


def test_cards_flashed_together_get_their_names_and_own_instance_ids_with_host_keys(
        seeded: Path, user_data: Path, tmp_path: Path) -> None:
    plan = plan_host_keys(seeded, known_hosts=tmp_path / "known_hosts", sshfp=tmp_path / "sshfp.zone")
    with ExitStack() as stack:
        cards = [attach(stack, tmp_path / f"card-{i}.img", CARD) for i in (1, 2, 3)]
        results = flash_cards(seeded, cards, yes=True, force_non_removable=True, hostname="pi-{n:02}",
                              host_keys=plan, user_data=user_data)
        assert all(r.verified for r in results), [r.error for r in results]
        ids = []
        for n, card in enumerate(cards, 1):
            meta, token_id = seed_of(card)
            assert meta["local-hostname"] == f"pi-{n:02}" and meta["dsmode"] == "local"
            assert meta["instance-id"] == token_id
            assert boot(card, "user-data") == USER_DATA
            assert boot(card, "entropi/hostname") == f"pi-{n:02}\n"
            ids.append(token_id)
    assert len(set(ids)) == 3 and "rpios-image" not in ids
    published = {line.split()[0] for line in (tmp_path / "known_hosts").read_text().splitlines()}
    assert published == {"pi-01", "pi-02", "pi-03"}  # the names the cards' cloud-init sets


def test_hostname_alone_from_a_compressed_image_renews_the_instance_and_keeps_the_user_data(
        seeded: Path, tmp_path: Path) -> None:
    with ExitStack() as stack:
        card = attach(stack, tmp_path / "card.img", CARD)
        flash(Path(f"{seeded}.zst"), card, yes=True, to_file=False, force_non_removable=True, hostname="kitchen")
        meta, first = seed_of(card)
        assert meta == {"dsmode": "local", "instance-id": first, "local-hostname": "kitchen"}
        assert boot(card, "user-data") == (BOOTFS / "user-data").read_text()
        assert boot(card, "cmdline.txt") == cmdline("0a1b2c3d").rstrip("\n") + f" ds=nocloud;i={first}\n"
        flash(seeded, card, yes=True, to_file=False, force_non_removable=True, hostname="hall")  # the card again
        meta, second = seed_of(card)
        assert second != first and meta["local-hostname"] == "hall"


def test_an_image_without_cloud_init_refuses_user_data_and_writes_nothing(user_data: Path, tmp_path: Path) -> None:
    need_root()
    need_tools("losetup", "bmaptool", "parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mdir", "zstd")
    plain = make_sample_image(tmp_path / "plain.img", boot_files={"cmdline.txt": cmdline("0a1b2c3d")})
    subprocess.run(["zstd", "-q", "-k", str(plain)], check=True)
    with ExitStack() as stack:
        cards = [attach(stack, tmp_path / f"card-{i}.img", CARD) for i in (1, 2)]
        for image in (plain, Path(f"{plain}.zst")):
            with pytest.raises(UserError, match=r"has no cloud-init seed \(meta-data on the boot partition\), so "
                                                r"--user-data would not be read"):
                flash_cards(image, cards, yes=True, force_non_removable=True, hostname="pi-{n:02}",
                            user_data=user_data)
    for i in (1, 2):
        with open(tmp_path / f"card-{i}.img", "rb") as f:
            assert f.read(4 * MIB) == bytes(4 * MIB)  # not a byte written
