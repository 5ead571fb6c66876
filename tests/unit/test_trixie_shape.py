"""The offline trixie base's shape (stages/source/trixie_shape.py and pi_trixie/): the
decisions and files that need no bootstrap. The built base: tests/integration/test_base_image.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from stages.core.errors import UserError
from stages.core.paths import PI_TRIXIE
from stages.source import trixie_shape
from stages.source.debian_base import BaseSpec

DEBIAN_CLOUD_CFG = """\
users:
   - default
system_info:
   # This will affect which distro class gets used
   distro: debian
   default_user:
     name: debian
     lock_passwd: True
     shell: /bin/bash
   ssh_svcname: ssh
"""
SCRIPTS = ["hooks/rpi-resize", "scripts/local-premount/resize_early", "scripts/local-bottom/set_partuuid"]


def test_cmdline_is_raspberry_pi_os_trixies_with_the_resize_token() -> None:
    assert trixie_shape.cmdline("1a2b3c4d") == (
        "console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes "
        "rootwait resize\n")


def test_default_user_becomes_pi_and_nothing_else_changes() -> None:
    edited = trixie_shape.default_user(DEBIAN_CLOUD_CFG, "pi")
    assert yaml.safe_load(edited)["system_info"]["default_user"] == {"name": "pi", "lock_passwd": True,
                                                                      "shell": "/bin/bash"}
    assert edited.replace("name: pi", "name: debian") == DEBIAN_CLOUD_CFG


def test_default_user_refuses_a_cloud_cfg_without_one() -> None:
    with pytest.raises(UserError, match="no system_info.default_user.name"):
        trixie_shape.default_user("users: [default]\n", "pi")


def test_trixie_is_shaped_differently_and_bookworm_keys_do_not_depend_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    trixie, bookworm = BaseSpec("arm64", "trixie"), BaseSpec("arm64", "bookworm")
    assert trixie.boot_start_mib == 8 and bookworm.boot_start_mib == 4
    assert BaseSpec("armhf", "trixie").boot_mount == "/boot/firmware" and BaseSpec("armhf").boot_mount == "/boot"
    assert "cloud-init" in trixie.packages and "cloud-init" not in bookworm.packages
    before = (trixie.key(), bookworm.key())
    monkeypatch.setattr(trixie_shape, "files", lambda: {"rootfs/x": "changed"})
    assert trixie.key() != before[0] and bookworm.key() == before[1]


def test_seed_files_are_the_three_nocloud_files_and_user_data_is_comment_only_cloud_config() -> None:
    assert sorted(p.name for p in trixie_shape.BOOTFS.iterdir()) == sorted(trixie_shape.SEED_FILES)
    user_data = (trixie_shape.BOOTFS / "user-data").read_text()
    assert user_data.startswith("#cloud-config\n") and yaml.safe_load(user_data) is None
    assert yaml.safe_load((trixie_shape.BOOTFS / "network-config").read_text()) is None
    assert yaml.safe_load((trixie_shape.BOOTFS / "meta-data").read_text()) == {"dsmode": "local",
                                                                              "instance_id": "rpios-image"}


def test_raspberry_pi_cloud_config_keeps_cloud_init_off_the_host_keys() -> None:
    cfg = yaml.safe_load((trixie_shape.ROOTFS / "etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg").read_text())
    assert cfg["datasource"] == {"NoCloud": {"seedfrom": "file:///boot/firmware"}}
    assert cfg["ssh_deletekeys"] is False and cfg["ssh_genkeytypes"] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_initramfs_scripts_are_executable_posix_shell(script: str) -> None:
    path = PI_TRIXIE / "rootfs/usr/share/initramfs-tools" / script
    assert path.stat().st_mode & 0o111
    sh = shutil.which("dash") or shutil.which("sh")
    assert sh is not None
    done = subprocess.run([sh, "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_essential_hook_copies_the_tree_before_the_kernel_makes_its_initramfs() -> None:
    assert trixie_shape.essential_hook() == f"cp -R --preserve=mode {trixie_shape.ROOTFS}/. \"$1/\"\n"
    assert "rootfs/usr/share/initramfs-tools/scripts/local-bottom/set_partuuid" in trixie_shape.files()
