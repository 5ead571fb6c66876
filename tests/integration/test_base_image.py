"""The Debian-built base images are shaped like Raspberry Pi OS and keep its dangers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stages.image.disk import read_mbr
from stages.image.guest import open_guest
from stages.source.debian_base import BOOT_MIB, BaseSpec
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _guest(image: Path, boot_mount: str) -> Any:
    g = open_guest([(image, "raw", True)])
    g.mount_ro("/dev/sda2", "/")
    g.mount_ro("/dev/sda1", boot_mount)
    return g


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_base_image_layout_and_prebaked_dangers(arch: str, request: pytest.FixtureRequest) -> None:
    image: Path = request.getfixturevalue(f"base_{arch}")
    spec = BaseSpec(arch)
    mbr = read_mbr(image)
    assert mbr.disk_id == spec.disk_id()
    p1, p2 = mbr.partitions
    assert p1.type_id == 0x0C and p1.size == BOOT_MIB << 20 and p2.type_id == 0x83
    g = _guest(image, spec.boot_mount)
    try:
        assert g.vfs_type("/dev/sda1") == "vfat" and g.vfs_label("/dev/sda1") == "bootfs"
        assert g.vfs_type("/dev/sda2") == "ext4" and g.vfs_label("/dev/sda2") == "rootfs"
        boot = spec.boot_mount
        cmdline = g.cat(f"{boot}/cmdline.txt")
        assert f"root=PARTUUID={spec.disk_id()}-02" in cmdline
        config = g.cat(f"{boot}/config.txt")
        kernel = re.search(r"^kernel=(\S+)", config, re.M)
        initrd = re.search(r"^initramfs (\S+) followkernel", config, re.M)
        assert kernel and initrd
        assert g.is_file(f"{boot}/{kernel.group(1)}") and g.is_file(f"{boot}/{initrd.group(1)}")
        dtb = "bcm2837-rpi-3-b.dtb" if arch == "arm64" else "bcm2836-rpi-2-b.dtb"
        assert g.is_file(f"{boot}/{dtb}")
        assert g.is_file(f"{boot}/start.elf") and g.is_file(f"{boot}/bootcode.bin")
        fstab = g.cat("/etc/fstab")
        assert re.search(rf"^PARTUUID={spec.disk_id()}-01\s+{boot}\s+vfat", fstab, re.M)
        assert re.search(rf"^PARTUUID={spec.disk_id()}-02\s+/\s+ext4", fstab, re.M)
        for prog in ("/usr/bin/python3", "/usr/sbin/sshd", "/usr/bin/sudo", "/lib/systemd/systemd"):
            assert g.exists(prog), prog
        assert re.search(r"^pi:\$6\$", g.cat("/etc/shadow"), re.M)
        # the dangers the pipeline must remove
        keys = [f for f in g.ls("/etc/ssh") if re.match(r"ssh_host_\w+_key$", f)]
        assert len(keys) >= 2 and all(g.filesize(f"/etc/ssh/{k}") > 0 for k in keys)
        assert g.filesize("/var/lib/systemd/random-seed") == 512
        assert re.fullmatch(r"[0-9a-f]{32}\n", g.cat("/etc/machine-id"))
        assert "regenerate_ssh_host_keys" in g.cat("/lib/systemd/system/regenerate_ssh_host_keys.service")
        assert g.is_symlink("/etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service")
    finally:
        g.close()


def test_second_base_image_call_reuses_the_cache_without_rebuilding(base_arm64: Path) -> None:
    before = base_arm64.stat().st_mtime_ns
    res = subprocess.run([sys.executable, "-m", "invoke", "base-image", "--arch", "arm64"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(base_arm64)
    assert "(cached)" in res.stderr and "bootstrap" not in res.stderr
    assert base_arm64.stat().st_mtime_ns == before
