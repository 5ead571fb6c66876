"""cloud-init's seed at flash time: the text edits (meta-data, the cmdline.txt token), the --user-data
refusals, and a card written as a file (--to-file: no root, no loop device)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.core.errors import UserError
from stages.flash.nocloud import instance_id, read_user_data
from stages.flash.write import flash
from stages.source.trixie_shape import BOOTFS, cmdline
from stages.textedit.cloud_init import cmdline_ds, meta_data
from tests.conftest import need_tools
from tests.support.flash_sample import MIB, make_sample_image, trixie_boot_files

FIXTURES = Path(__file__).parent / "data" / "user-data"
BASE_META = (BOOTFS / "meta-data").read_text()


def test_meta_data_gets_a_new_instance_id_and_the_host_name_and_keeps_the_rest() -> None:
    out = meta_data(BASE_META, "entropi-1-ab", "pi-07")
    assert yaml.safe_load(out) == {"dsmode": "local", "instance-id": "entropi-1-ab", "local-hostname": "pi-07"}
    assert "rpios-image" not in out and out.endswith("local-hostname: pi-07\n")
    assert [ln for ln in out.splitlines() if ln.startswith("#")] == [ln for ln in BASE_META.splitlines()
                                                                     if ln.startswith("#")]


def test_meta_data_replaces_an_earlier_flash_and_keeps_local_hostname_without_a_new_one() -> None:
    once = meta_data(BASE_META, "entropi-1-ab", "pi-07")
    twice = meta_data(once, "entropi-2-cd", "pi-08")
    assert yaml.safe_load(twice) == {"dsmode": "local", "instance-id": "entropi-2-cd", "local-hostname": "pi-08"}
    assert yaml.safe_load(meta_data(once, "entropi-3-ef", None))["local-hostname"] == "pi-07"
    assert meta_data("", "x", None) == "instance-id: x\n"


def test_cmdline_token_is_appended_on_the_one_line() -> None:
    out = cmdline_ds(cmdline("0a1b2c3d"), "entropi-1-ab")
    assert out == ("console=serial0,115200 console=tty1 root=PARTUUID=0a1b2c3d-02 rootfstype=ext4 fsck.repair=yes "
                   "rootwait resize ds=nocloud;i=entropi-1-ab\n")


def test_cmdline_token_replaces_any_earlier_ds_token() -> None:
    imager = "console=tty1 root=PARTUUID=0a1b2c3d-02 rootwait ds=nocloud;i=rpi-imager-1784124660514 quiet\n"
    assert cmdline_ds(imager, "entropi-2-cd") == "console=tty1 root=PARTUUID=0a1b2c3d-02 rootwait quiet " \
                                                 "ds=nocloud;i=entropi-2-cd\n"
    net = "root=/dev/mmcblk0p2 ds=nocloud-net;s=http://10.0.0.1/ rootwait"
    assert cmdline_ds(net, "i") == "root=/dev/mmcblk0p2 rootwait ds=nocloud;i=i\n"


def test_instance_ids_are_fresh_and_fit_the_cmdline_token() -> None:
    ids = {instance_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"entropi-\d{13}-[0-9a-f]{8}", i) for i in ids)


@pytest.mark.parametrize(("fixture", "message"), [
    ("no-header.yaml", r"--user-data: does not start with #cloud-config \(it starts with 'hostname: pi-07'\) "
                       r"\(hint: make #cloud-config its first line"),
    ("bad-yaml.yaml", r"--user-data: not valid YAML at line 6, column 7: expected ',' or '\]', but got ':' "
                      r"\(hint: give a cloud-config file"),
    ("a-list.yaml", r"--user-data: is a YAML list, not a mapping of settings"),
    ("empty.yaml", r"--user-data: does not start with #cloud-config \(it starts with 'an empty file'\)"),
    ("missing.yaml", r"--user-data: no such file"),
])
def test_a_bad_user_data_is_one_line(fixture: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        read_user_data(FIXTURES / fixture)
    line = e.value.render()
    assert "\n" not in line and line.startswith(f"error: {FIXTURES / fixture}: ")
    assert re.search(message, line), line


def test_an_imager_style_user_data_is_read() -> None:
    text, data = read_user_data(FIXTURES / "imager.yaml")
    assert text.startswith("#cloud-config\n") and data["hostname"] == "pi-07" and data["ssh_pwauth"] is False


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A small raw image whose boot partition has the trixie base's seed and cmdline.txt."""
    need_tools("parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mtype", "mdir")
    return make_sample_image(tmp_path / "seeded.img", size_mib=24, boot_mib=8, boot_data=MIB, root_data=MIB,
                             bmap=False, boot_files=trixie_boot_files())


def mtype(disk: Path, name: str) -> str:
    return subprocess.run(["mtype", "-i", f"{disk}@@{MIB}", f"::{name}"], check=True, capture_output=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout.decode()


@pytest.mark.parametrize(("fixture", "hostname", "message"), [
    ("bad-yaml.yaml", "pi-07", r"not valid YAML at line 6"),
    ("no-header.yaml", None, r"does not start with #cloud-config"),
    ("imager.yaml", "pi-08", r"--user-data: hostname 'pi-07' differs from --hostname 'pi-08' \(hint: drop hostname:"),
    ("fqdn.yaml", "pi-08", r"--user-data: fqdn 'pi-07.example.org' does not name --hostname 'pi-08'"),
])
def test_user_data_refusals_come_before_anything_is_written(seeded: Path, tmp_path: Path, fixture: str,
                                                            hostname: str | None, message: str) -> None:
    out = tmp_path / "card.img"
    with pytest.raises(UserError, match=message):
        flash(seeded, out, yes=True, to_file=True, force_non_removable=False, hostname=hostname,
              user_data=FIXTURES / fixture)
    assert not list(tmp_path.glob("*card.img*"))


def test_an_image_without_cloud_init_refuses_user_data(tmp_path: Path) -> None:
    need_tools("parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mdir")
    plain = make_sample_image(tmp_path / "plain.img", size_mib=24, boot_mib=8, boot_data=MIB, root_data=MIB,
                              bmap=False, boot_files={"cmdline.txt": cmdline("0a1b2c3d")})
    with pytest.raises(UserError) as e:
        flash(plain, tmp_path / "card.img", yes=True, to_file=True, force_non_removable=False, hostname="pi-07",
              user_data=FIXTURES / "imager.yaml")
    assert e.value.render() == (f"error: {plain}: has no cloud-init seed (meta-data on the boot partition), so "
                                "--user-data would not be read (hint: flash an image with cloud-init (Raspberry Pi OS "
                                "trixie, or recipes/debian-trixie-arm64.toml), or drop --user-data)")
    assert not list(tmp_path.glob("*card.img*"))
    flash(plain, tmp_path / "card.img", yes=True, to_file=True, force_non_removable=False, hostname="pi-07")
    assert mtype(tmp_path / "card.img", "entropi/hostname") == "pi-07\n"  # --hostname alone: as before
    assert mtype(tmp_path / "card.img", "cmdline.txt") == cmdline("0a1b2c3d")  # no ds= token without a seed


def test_to_file_card_gets_host_name_instance_id_user_data_and_token(seeded: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.img"
    flash(seeded, out, yes=True, to_file=True, force_non_removable=False, hostname="pi-07",
          user_data=FIXTURES / "imager.yaml")
    meta = yaml.safe_load(mtype(out, "meta-data"))
    assert meta["local-hostname"] == "pi-07" and meta["dsmode"] == "local"
    assert mtype(out, "cmdline.txt").split()[-1] == f"ds=nocloud;i={meta['instance-id']}"
    assert mtype(out, "user-data") == (FIXTURES / "imager.yaml").read_text()
    assert mtype(out, "entropi/hostname") == "pi-07\n"
    assert mtype(out, "network-config") == (BOOTFS / "network-config").read_text()  # not touched


def test_an_image_whose_own_user_data_names_another_host_refuses_hostname(tmp_path: Path) -> None:
    need_tools("parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mtype", "mdir")
    files = {**trixie_boot_files(), "user-data": "#cloud-config\nhostname: raspberrypi\n"}
    image = make_sample_image(tmp_path / "named.img", size_mib=24, boot_mib=8, boot_data=MIB, root_data=MIB,
                              bmap=False, boot_files=files)
    with pytest.raises(UserError, match=rf"^error: {image}: the user-data on its boot partition: hostname "
                                        r"'raspberrypi' differs from --hostname 'pi-07'"):
        flash(image, tmp_path / "card.img", yes=True, to_file=True, force_non_removable=False, hostname="pi-07")
    assert not list(tmp_path.glob("*card.img*"))


def test_invoke_flash_user_data_error_is_one_line_and_exit_2(tmp_path: Path, root_dir: Path) -> None:
    (tmp_path / "x.img").write_bytes(bytes(4096))
    res = subprocess.run([sys.executable, "-m", "invoke", "flash", "--image", str(tmp_path / "x.img"), "--device",
                          str(tmp_path / "card.img"), "--to-file", "--user-data", str(FIXTURES / "bad-yaml.yaml")],
                         cwd=root_dir, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {FIXTURES / 'bad-yaml.yaml'}: --user-data: not valid YAML at line 6, column 7: expected ',' or ']', "
        "but got ':' (hint: give a cloud-config file: its first line #cloud-config, then YAML (see cloud-init's docs))"]
    assert not (tmp_path / "card.img").exists()
