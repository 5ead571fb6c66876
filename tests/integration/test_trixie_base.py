"""The offline trixie base is shaped like Raspberry Pi OS trixie, and a build keeps that shape's
own first-boot machinery where entropi wants it kept (resize, cloud-init) and turns off the rest."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.image.disk import read_mbr
from stages.image.guest import open_guest
from stages.source import deferred, trixie_shape
from stages.source.debian_base import BOOT_MIB, BaseSpec
from tests.conftest import need_tools

pytestmark = pytest.mark.integration
SPEC = BaseSpec("arm64", "trixie")
ETC = "/etc/systemd/system"
BOOT = "/boot/firmware"


def _guest(image: Path) -> Any:
    g = open_guest([(image, "raw", True)])
    g.mount_ro("/dev/sda2", "/")
    g.mount_ro("/dev/sda1", BOOT)
    return g


def _wanted(g: Any, unit: str, by: str) -> bool:
    return bool(g.is_symlink(f"{ETC}/{by}.wants/{unit}"))


def test_trixie_base_layout_cmdline_and_partuuids(base_trixie_arm64: Path) -> None:
    mbr = read_mbr(base_trixie_arm64)
    assert mbr.disk_id == SPEC.disk_id()
    p1, p2 = mbr.partitions
    assert (p1.type_id, p1.start, p1.size) == (0x0C, 8 << 20, BOOT_MIB << 20) and p2.type_id == 0x83
    g = _guest(base_trixie_arm64)
    try:
        assert g.vfs_label("/dev/sda1") == "bootfs" and g.vfs_label("/dev/sda2") == "rootfs"
        assert g.cat(f"{BOOT}/cmdline.txt") == trixie_shape.cmdline(SPEC.disk_id())
        fstab = g.cat("/etc/fstab")
        assert re.search(rf"^PARTUUID={SPEC.disk_id()}-01\s+{BOOT}\s+vfat", fstab, re.M)
        assert re.search(rf"^PARTUUID={SPEC.disk_id()}-02\s+/\s+ext4", fstab, re.M)
        assert "dtparam=random" not in g.cat(f"{BOOT}/config.txt")
        assert not g.exists("/usr/sbin/rngd")
    finally:
        g.close()


def test_trixie_base_has_cloud_init_seed_and_raspberry_pi_config(base_trixie_arm64: Path) -> None:
    g = _guest(base_trixie_arm64)
    try:
        for name in trixie_shape.SEED_FILES:
            assert g.cat(f"{BOOT}/{name}") == (trixie_shape.BOOTFS / name).read_text(), name
        rpi = yaml.safe_load(g.cat("/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg"))
        assert rpi["datasource"]["NoCloud"]["seedfrom"] == "file:///boot/firmware"
        assert rpi["ssh_deletekeys"] is False and rpi["ssh_genkeytypes"] == []
        assert yaml.safe_load(g.cat("/etc/cloud/cloud.cfg"))["system_info"]["default_user"]["name"] == "pi"
        assert "RequiresMountsFor=/boot/firmware" in g.cat(f"{ETC}/cloud-init-main.service.d/rpi-seed.conf")
        assert g.exists("/usr/sbin/NetworkManager") and g.exists("/usr/sbin/netplan")
        assert g.statns("/usr/lib/netplan/00-network-manager-all.yaml")["st_mode"] & 0o777 == 0o600
    finally:
        g.close()


def test_trixie_base_first_boot_units_and_dangers(base_trixie_arm64: Path) -> None:
    g = _guest(base_trixie_arm64)
    try:
        assert _wanted(g, "sshd-keygen.service", "ssh.service")
        assert _wanted(g, "regenerate_ssh_host_keys.service", "multi-user.target")
        assert _wanted(g, "rpi-resize.service", "sysinit.target")
        assert _wanted(g, "NetworkManager.service", "multi-user.target")
        assert not _wanted(g, "ssh.service", "multi-user.target")  # ssh off, as shipped
        assert not _wanted(g, "systemd-networkd.service", "multi-user.target")
        assert "ConditionFirstBoot=yes" in g.cat("/usr/lib/systemd/system/rpi-resize.service")
        assert g.glob_expand("/etc/ssh/ssh_host_*") == []  # trixie bakes no host keys
        assert g.cat("/etc/machine-id") == "uninitialized\n"
        assert g.filesize("/var/lib/systemd/random-seed") == 512
        shadow = g.cat("/etc/shadow")
        assert re.search(r"^pi:!:", shadow, re.M) and re.search(r"^root:\*:", shadow, re.M)
    finally:
        g.close()


def test_trixie_base_initramfs_carries_the_resize_scripts_and_their_tools(base_trixie_arm64: Path,
                                                                           tmp_path: Path) -> None:
    need_tools("lsinitramfs")
    g = _guest(base_trixie_arm64)
    try:
        initrd = next(f for f in g.ls(BOOT) if f.startswith("initrd.img-"))
        g.download(f"{BOOT}/{initrd}", str(tmp_path / "initrd"))
    finally:
        g.close()
    listing = subprocess.run(["lsinitramfs", str(tmp_path / "initrd")], capture_output=True, text=True,
                             check=True).stdout.split()
    names = {re.sub(r"\.ko(\.\w+)?$", ".ko", p.rsplit("/", 1)[-1]) for p in listing}
    assert "scripts/local-premount/resize_early" in listing and "scripts/local-bottom/set_partuuid" in listing
    assert {"sfdisk", "busybox", "vfat.ko", "nls_cp437.ko", "bcm2835-rng.ko"} <= names


def test_trixie_base_deferred_commands_ran_once_and_left_no_stub(base_trixie_arm64: Path) -> None:
    g = _guest(base_trixie_arm64)
    try:
        assert "entropi-deferred" not in g.cat("/var/lib/dpkg/diversions")
        for d in deferred.DEFERRED:
            assert not g.exists(d.diverted), d.path
            assert g.filesize(d.path) > 200, d.path  # the package's command, not the stub
        # py3compile's work: cloud-init's and the stdlib's modules are compiled
        assert g.glob_expand("/usr/lib/python3/dist-packages/cloudinit/__pycache__/*.cpython-3*.pyc")
        assert g.glob_expand("/usr/lib/python3/dist-packages/yaml/__pycache__/*.cpython-3*.pyc")
        # update-ca-certificates' work: the bundle and the hashed links
        assert g.filesize("/etc/ssl/certs/ca-certificates.crt") > 100_000
        assert len(g.glob_expand("/etc/ssl/certs/*.0")) > 100
        # update-initramfs' work, copied to the boot partition by raspi-firmware's hook
        assert [f for f in g.ls(BOOT) if f.startswith("initrd.img-")]
    finally:
        g.close()


def test_trixie_build_keeps_the_initramfs_resize_and_cloud_init_and_masks_key_makers(built_trixie_arm64: Path
                                                                                     ) -> None:
    manifest = json.loads(built_trixie_arm64.with_suffix(".manifest.json").read_text())
    assert manifest["image"]["first_boot_expansion"] == \
        "initramfs resize (`resize` in cmdline.txt) + rpi-resize.service"
    assert {"sshd-keygen.service", "regenerate_ssh_host_keys.service"} <= \
        {u.split()[0] for u in manifest["secrets"]["regenerators_disabled"]}
    assert manifest["cloud_init"]["present"] and "guard" in manifest["cloud_init"]["host_keys"]
    assert manifest["image"]["shrink"]["file_bytes_after"] < manifest["image"]["shrink"]["file_bytes_before"]
    g = _guest(built_trixie_arm64)
    try:
        assert g.cat(f"{BOOT}/cmdline.txt").split()[-1] == "resize"  # the image's own resize stays
        assert not g.exists("/usr/lib/entropi/entropi-growroot")
        assert _wanted(g, "rpi-resize.service", "sysinit.target")
        assert _wanted(g, "ssh.service", "multi-user.target")
        for unit in ("sshd-keygen.service", "regenerate_ssh_host_keys.service"):
            assert g.readlink(f"{ETC}/{unit}") == "/dev/null", unit
        dropin = yaml.safe_load(g.cat("/etc/cloud/cloud.cfg.d/99_zz-entropi.cfg"))
        assert dropin["users"] == [] and dropin["system_info"]["default_user"]["name"] == "pi"
        assert not g.exists("/etc/cloud/cloud-init.disabled")
        assert re.search(r"^pi:\$6\$", g.cat("/etc/shadow"), re.M)
    finally:
        g.close()
