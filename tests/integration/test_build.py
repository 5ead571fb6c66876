"""`build` over the Debian arm64 base: every property of a safe-to-flash image, checked in the output."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stages.build.firstboot_unit import PACKAGE_DIR, PACKAGE_FILES
from stages.core.files import sha256_file
from stages.image.disk import read_mbr
from stages.image.guest import host_kernel, open_guest, unpack_kernel
from stages.source.debian_base import sidecar
from tests.conftest import PASSWORD_HASH

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def g(built_arm64: Path) -> Any:
    handle = open_guest([(built_arm64, "raw", True)])
    handle.mount_ro("/dev/sda2", "/")
    handle.mount_ro("/dev/sda1", "/boot/firmware")
    yield handle
    handle.close()


def _links(g: Any, unit: str) -> list[str]:
    return [f"{d}/{unit}" for d in g.ls("/etc/systemd/system")
            if d.endswith((".wants", ".requires")) and g.is_symlink(f"/etc/systemd/system/{d}/{unit}")]


def test_outputs_are_whole_with_bmap_compressed_copy_checksum_and_manifest(built_arm64: Path, base_arm64: Path) -> None:
    out = built_arm64.parent
    names = {p.name for p in out.iterdir() if not p.name.startswith(".") and ".boot" not in p.name}
    assert names == {"ci-arm64.img", "ci-arm64.img.bmap", "ci-arm64.img.sha256", "ci-arm64.img.zst",
                     "ci-arm64.manifest.json"}  # (the boot test may have left its reports beside them)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert (out / "ci-arm64.img.sha256").read_text().split()[0] == sha256_file(built_arm64)
    manifest = json.loads((out / "ci-arm64.manifest.json").read_text())
    assert manifest["image"]["arch"] == "arm64" and manifest["image"]["release"] == "bookworm"
    assert manifest["image"]["boot_mount"] == "/boot/firmware" and manifest["image"]["kernels"]
    kernel = host_kernel()
    pvh = manifest["image"]["guestfs_accel"] == "tcg" and kernel and unpack_kernel(kernel.read_bytes())
    assert manifest["image"]["guestfs_kernel"] == ("unpacked (PVH)" if pvh else "packaged")
    assert "rng-tools-debian" in manifest["packages"]["installed"]
    assert manifest["packages"]["apt"] == "host apt, dpkg in the chroot"  # this host has apt
    assert {s["name"] for s in manifest["stages"]} >= {"work copy", "packages", "secrets", "finalise outputs"}
    assert manifest["outputs"]["ci-arm64.img"]["sha256"] == sha256_file(built_arm64)
    assert read_mbr(built_arm64).disk_id == read_mbr(base_arm64).disk_id  # PARTUUIDs still match


def test_grow_enlarged_the_root_partition(built_arm64: Path, base_arm64: Path) -> None:
    assert read_mbr(built_arm64).partitions[1].size == read_mbr(base_arm64).partitions[1].size + (256 << 20)


def test_cached_base_is_unchanged(built_arm64: Path, base_arm64: Path) -> None:
    assert sha256_file(base_arm64) == json.loads(sidecar(base_arm64).read_text())["sha256"]


def test_no_prebaked_secrets_remain(g: Any) -> None:
    assert g.glob_expand("/etc/ssh/ssh_host_*") == []
    assert not g.exists("/var/lib/systemd/random-seed")
    machine_id = g.cat("/etc/machine-id").strip()
    assert not re.fullmatch(r"[0-9a-f]{32}", machine_id)


def test_hwrng_enabled_once_and_rngd_installed_enabled_on_hwrng(g: Any) -> None:
    config = g.cat("/boot/firmware/config.txt")
    assert len(re.findall(r"^dtparam=random=on$", config, re.M)) == 1
    modules = g.cat("/etc/modules-load.d/entropi-hwrng.conf") if g.exists(
        "/etc/modules-load.d/entropi-hwrng.conf") else ""
    assert "bcm2835_rng" in modules or "bcm2835-rng" in g.cat(
        f"/lib/modules/{g.ls('/lib/modules')[0]}/modules.builtin")
    assert g.exists("/usr/sbin/rngd")
    assert re.search(r"^HRNGDEVICE=/dev/hwrng$", g.cat("/etc/default/rng-tools-debian"), re.M)
    # enabled either as a systemd unit or, for the SysV script rng-tools-debian ships, by its rc links
    assert _links(g, "rng-tools-debian.service") or g.glob_expand("/etc/rc[2345].d/S*rng-tools-debian")


def test_accounts_root_locked_user_hash_and_keys(g: Any, user_key: Path) -> None:
    shadow = g.cat("/etc/shadow")
    assert re.search(r"^root:!", shadow, re.M)
    assert f"pi:{PASSWORD_HASH}:" in shadow
    assert g.cat("/home/pi/.ssh/authorized_keys").strip() == user_key.with_suffix(".pub").read_text().strip()
    assert "PasswordAuthentication no" in g.cat("/etc/ssh/sshd_config.d/50-entropi.conf")


def test_ssh_and_firstboot_enabled_and_competing_regenerators_off(g: Any) -> None:
    assert _links(g, "ssh.service")
    assert _links(g, "entropi-firstboot.service")
    assert any(x.endswith("ssh.service.requires/entropi-firstboot.service") for x in
               _links(g, "entropi-firstboot.service"))
    assert g.is_file("/usr/lib/entropi/entropi-firstboot")
    assert all(g.is_file(f"{PACKAGE_DIR}/{name}") for name in PACKAGE_FILES)  # the launcher's package
    assert json.loads(g.cat("/etc/entropi/firstboot.json"))["key_types"][2] == {"type": "rsa", "bits": 3072}
    assert not _links(g, "regenerate_ssh_host_keys.service")
    assert g.readlink("/etc/systemd/system/regenerate_ssh_host_keys.service") == "/dev/null"
    # Raspberry Pi OS's script (its init= first boot calls it directly) is diverted and defers
    script = "/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys"
    assert "ssh-keygen -A" in g.cat(script + ".distrib") and "ssh-keygen" not in g.cat(script)
    assert f"{script}\n{script}.distrib\n:\n" in g.cat("/var/lib/dpkg/diversions")


def test_armhf_legacy_layout_builds_with_the_same_properties(built_armhf: Path) -> None:
    manifest = json.loads(built_armhf.with_name("ci-armhf.manifest.json").read_text())
    assert manifest["image"]["arch"] == "armhf" and manifest["image"]["boot_mount"] == "/boot"
    h = open_guest([(built_armhf, "raw", True)])
    try:
        h.mount_ro("/dev/sda2", "/")
        h.mount_ro("/dev/sda1", "/boot")
        assert len(re.findall(r"^dtparam=random=on$", h.cat("/boot/config.txt"), re.M)) == 1
        assert h.glob_expand("/etc/ssh/ssh_host_*") == []
        assert json.loads(h.cat("/etc/entropi/firstboot.json"))["boot_dir"] == "/boot"
        assert h.exists("/usr/sbin/rngd") and _links(h, "entropi-firstboot.service")
    finally:
        h.close()


def test_armhf_shrunk_file_ends_with_a_clean_root_and_growroot_is_installed(built_armhf: Path) -> None:
    import subprocess

    manifest = json.loads(built_armhf.with_name("ci-armhf.manifest.json").read_text())
    shrink = manifest["image"]["shrink"]
    root = read_mbr(built_armhf).partitions[1]
    assert built_armhf.stat().st_size == root.start + root.size == shrink["file_bytes_after"]
    assert shrink["file_bytes_after"] < shrink["file_bytes_before"] and root.size >= shrink["root_fs_bytes"]
    assert manifest["image"]["first_boot_expansion"] == "entropi-growroot.service"
    loop = subprocess.run(["losetup", "--find", "--show", "--read-only", "--offset", str(root.start),
                           "--sizelimit", str(root.size), str(built_armhf)], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        fsck = subprocess.run(["e2fsck", "-fn", loop], capture_output=True, text=True)
        head = subprocess.run(["dumpe2fs", "-h", loop], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    blocks = int(re.search(r"^Block count:\s+(\d+)", head, re.M).group(1))  # type: ignore[union-attr]
    free = int(re.search(r"^Free blocks:\s+(\d+)", head, re.M).group(1))  # type: ignore[union-attr]
    assert blocks * 4096 == shrink["root_fs_bytes"] and free * 4096 >= 64 << 20  # shrink_free kept


def test_building_over_its_own_output_changes_nothing_twice(built_arm64: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.build.pipeline import build
    from stages.core.recipe import load_recipe

    monkeypatch.setenv("ENTROPI_HOST_APT", "0")  # this time apt runs inside the chroot (the fallback)

    recipe = tmp_path / "again.toml"
    recipe.write_text(f'[base]\npath = "{built_arm64}"\n[output]\nname = "again"\ncompress = "none"\n')
    before = sha256_file(built_arm64)
    manifest = build(load_recipe(recipe), tmp_path / "out")
    assert manifest["packages"]["apt"] == "apt in the chroot"
    assert sha256_file(built_arm64) == before
    h = open_guest([(tmp_path / "out" / "again.img", "raw", True)])
    try:
        h.mount_ro("/dev/sda2", "/")
        h.mount_ro("/dev/sda1", "/boot/firmware")
        assert len(re.findall(r"^dtparam=random=on$", h.cat("/boot/firmware/config.txt"), re.M)) == 1
        assert h.cat("/boot/firmware/config.txt") == _config_of(built_arm64)
        assert h.cat("/etc/modules-load.d/entropi-hwrng.conf").count("bcm2835_rng") == 1
        assert h.glob_expand("/etc/ssh/ssh_host_*") == []
    finally:
        h.close()


def _config_of(image: Path) -> str:
    h = open_guest([(image, "raw", True)])
    try:
        h.mount_ro("/dev/sda1", "/")
        return str(h.cat("/config.txt"))
    finally:
        h.close()
