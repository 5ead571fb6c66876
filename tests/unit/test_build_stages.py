"""Every build stage in milliseconds: the file edits through a directory-backed fake of the
libguestfs handle (tests/support/fakeguest.py); for the stages that need root, loop
devices, pyparted or a chroot (base image, open, packages, shrink, a grown work copy),
their decisions and the refusals that come before any of that.
The same stages against real images: tests/integration/test_build.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.build import accounts, edit_open, firstboot_unit
from stages.build.accounts import Accounts
from stages.build.base_image import BaseImage
from stages.build.cloud_init import CloudInit
from stages.build.edit_close import EditClose
from stages.build.edit_open import EditOpen
from stages.build.expansion import GROWROOT, GROWROOT_UNIT, Expansion
from stages.build.finalize import Finalize
from stages.build.firstboot_unit import PACKAGE_DIR, PACKAGE_FILES, FirstbootUnit
from stages.build.hwrng import Hwrng
from stages.build.open_image import OpenImage
from stages.build.overlays import Overlays
from stages.build.packages import Packages, wanted_packages
from stages.build.pipeline import source_stage
from stages.build.secrets import Secrets
from stages.build.shrink import Shrink
from stages.build.work_copy import WorkCopy
from stages.core.errors import UserError
from stages.core.paths import FIRSTBOOT
from stages.core.runner import Context
from stages.image import units
from stages.image.rootfs import detect_arch, detect_boot_mount, os_release
from stages.source.debian_base import BUILD_TOOLS, BaseSpec
from stages.textedit.services import RPI_REGENERATOR
from tests.support.fakeguest import FakeGuest, FakeLaunch
from tests.support.images import BOOT, HASH, KEY, UNIT, config, context, make_image


@pytest.fixture
def g(tmp_path: Path) -> FakeGuest:
    return make_image(tmp_path / "image")


def run(stage: Any, ctx: Context) -> Context:
    stage.check(ctx)
    stage.run(ctx)
    return ctx


def wants(g: FakeGuest, unit: str, target: str = "multi-user.target") -> str:
    return g.readlink(f"/etc/systemd/system/{target}.wants/{unit}")


# -- open / close libguestfs -------------------------------------------------------------

def test_edit_open_mounts_root_and_boot_of_the_launched_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edit_open, "accel", lambda: "tcg")
    monkeypatch.setattr(edit_open, "appliance_setup", lambda: "packaged")
    image = make_image(tmp_path / "image")
    fresh = FakeGuest(image.devices)
    ctx = context(tmp_path, None)
    ctx.state.guest_launch = FakeLaunch(fresh)  # type: ignore[assignment]
    run(EditOpen(), ctx)
    assert ctx.state.g is fresh and ctx.state.guest_launch is None
    assert fresh.calls == ["mount /dev/sda2 /", f"mount /dev/sda1 {BOOT}"]
    assert fresh.text(f"{BOOT}/config.txt").startswith("# For more options")
    assert ctx.manifest["image"] == {"guestfs_accel": "tcg", "guestfs_kernel": "packaged"}


def test_edit_close_unmounts_shuts_down_and_closes_once(tmp_path: Path, g: FakeGuest) -> None:
    ctx = context(tmp_path, g)
    EditClose().run(ctx)
    EditClose().run(ctx)  # teardown after a close: nothing left to do
    assert g.calls[-3:] == ["umount_all", "shutdown", "close"] and g.calls.count("close") == 1
    assert ctx.state.g is None


# -- hardware RNG ------------------------------------------------------------------------

def test_hwrng_enables_the_rng_loads_its_module_and_configures_rngd(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(Hwrng(), context(tmp_path, g))
    assert "dtparam=random=on" in g.text(f"{BOOT}/config.txt").split("[all]")[1]
    conf = "/etc/modules-load.d/entropi-hwrng.conf"
    assert g.text(conf).splitlines()[-1] == "bcm2708_rng" and g.mode(conf) == 0o644
    rngd = g.text("/etc/default/rng-tools-debian")
    assert "HRNGDEVICE=/dev/hwrng" in rngd and g.mode("/etc/default/rng-tools-debian") == 0o644
    assert wants(g, "rng-tools-debian.service") == "/lib/systemd/system/rng-tools-debian.service"
    assert ctx.manifest["rngd"]["config"]["fill_bits"] == 128  # 50 % of a 256-bit pool (kernel >= 5.18)


def test_hwrng_off_removes_a_stale_module_list(tmp_path: Path, g: FakeGuest) -> None:
    g.mkdir_p("/etc/modules-load.d")
    g.write("/etc/modules-load.d/entropi-hwrng.conf", b"bcm2708_rng\n")
    run(Hwrng(), context(tmp_path, g, config(hwrng__enable=False, rngd__package="none")))
    assert not g.exists("/etc/modules-load.d/entropi-hwrng.conf")
    assert "random=on" not in g.text(f"{BOOT}/config.txt")
    assert g.text("/etc/default/rng-tools-debian") == "#HRNGDEVICE=/dev/hwrng\n"  # rngd left as packaged


def test_hwrng_refuses_a_min_entropy_rngd_never_fills_to_on_an_older_kernel_of_the_image(
        tmp_path: Path, g: FakeGuest) -> None:
    # rngd is set up for the newest kernel's 256-bit pool (watermark 128); the 5.15 kernel has a
    # 4096-bit pool and waits for entropy_avail >= 2048, which rngd then never fills to.
    ctx = context(tmp_path, g)
    ctx.state.kernels = ["5.15.84-v8+", "6.6.51+rpt-rpi-v8"]
    with pytest.raises(UserError) as info:
        run(Hwrng(), ctx)
    assert info.value.key == "firstboot.min_entropy"
    assert "min_entropy 2048 can never be reached: rngd fills the pool only up to its fill watermark, 128 bits" in \
        info.value.what and "kernel 5.15.84-v8+ waits for min_entropy" in info.value.what
    assert info.value.hint == "set firstboot.min_entropy to 128 or less"
    assert g.text("/etc/default/rng-tools-debian") == "#HRNGDEVICE=/dev/hwrng\n"  # refused before writing


@pytest.mark.parametrize("kernels, fill_bits", [(["6.6.51+rpt-rpi-v8"], 128), (["5.10.103-v8+"], 2048),
                                                 (["5.10.103-v8+", "5.15.84-v8+"], 2048)])
def test_hwrng_accepts_min_entropy_where_rngd_reaches_it_or_no_kernel_waits_for_it(
        tmp_path: Path, g: FakeGuest, kernels: list[str], fill_bits: int) -> None:
    ctx = context(tmp_path, g)
    ctx.state.kernels = kernels
    run(Hwrng(), ctx)
    assert ctx.manifest["rngd"]["config"]["fill_bits"] == fill_bits


def test_hwrng_tpm_adds_its_overlay_and_masks_trousers(tmp_path: Path, g: FakeGuest) -> None:
    g.write("/lib/systemd/system/trousers.service", b"[Unit]\n")
    run(Hwrng(), context(tmp_path, g, config(hwrng__tpm="slb9670")))
    assert "dtoverlay=tpm-slb9670" in g.text(f"{BOOT}/config.txt")
    assert g.readlink("/etc/systemd/system/trousers.service") == "/dev/null"


def test_hwrng_tpm_installs_and_enables_the_tpm_feeder(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(Hwrng(), context(tmp_path, g, config(hwrng__tpm="slb9670")))
    assert g.mode("/usr/lib/entropi/entropi-tpm-feed") == 0o755
    assert g.text("/usr/lib/entropi/entropi-tpm-feed").startswith("#!/usr/bin/python3")
    assert g.exists("/etc/systemd/system/sysinit.target.wants/entropi-tpm-feed.service")
    assert ctx.manifest["hwrng"]["tpm_feeder"]["device"] == "/dev/tpmrm0"


def test_hwrng_without_tpm_installs_no_feeder(tmp_path: Path, g: FakeGuest) -> None:
    run(Hwrng(), context(tmp_path, g))
    assert not g.exists("/usr/lib/entropi/entropi-tpm-feed")


# -- secrets -----------------------------------------------------------------------------

def test_secrets_removes_baked_keys_and_seeds_and_resets_machine_id(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(Secrets(), context(tmp_path, g))
    assert g.glob_expand("/etc/ssh/ssh_host_*") == []
    assert not g.exists("/var/lib/systemd/random-seed") and not g.exists("/var/lib/entropi/firstboot.done")
    assert not g.exists("/var/lib/entropi/committed.json"), "a committed set would pass keys made elsewhere"
    assert g.text("/etc/machine-id") == "uninitialized\n" and g.mode("/etc/machine-id") == 0o444
    assert g.readlink("/etc/systemd/system/regenerate_ssh_host_keys.service") == "/dev/null"
    assert "/etc/ssh/ssh_host_ed25519_key" in ctx.manifest["secrets"]["removed"]


def test_secrets_diverts_the_pi_regenerator_once(tmp_path: Path, g: FakeGuest) -> None:
    run(Secrets(), context(tmp_path, g))
    run(Secrets(), context(tmp_path, g))  # a second run keeps the packaged script
    assert g.text(f"{RPI_REGENERATOR}.distrib") == "#!/bin/sh\nssh-keygen -A\n"
    assert "ssh-keygen" not in g.text(RPI_REGENERATOR) and g.mode(RPI_REGENERATOR) == 0o755
    assert g.text("/var/lib/dpkg/diversions").count(RPI_REGENERATOR) == 2  # from, to


# -- accounts and ssh --------------------------------------------------------------------

def test_accounts_renames_pi_sets_keys_locks_root_and_turns_ssh_on(tmp_path: Path, g: FakeGuest) -> None:
    cfg = config(users__name="alice", users__password_hash=HASH, users__authorized_keys=[KEY],
                 users__hostname="card")
    ctx = run(Accounts(), context(tmp_path, g, cfg))
    assert g.text("/etc/passwd").splitlines()[1].startswith("alice:x:1000:1000:")
    assert g.is_file("/home/alice/.bashrc") and not g.exists("/home/pi")
    shadow = g.text("/etc/shadow").splitlines()
    assert shadow[0].startswith("root:!:") and shadow[1].startswith(f"alice:{HASH}:")
    assert g.mode("/etc/shadow") == 0o640
    assert g.text("/home/alice/.ssh/authorized_keys") == KEY + "\n"
    assert g.mode("/home/alice/.ssh/authorized_keys") == 0o600 and g.mode("/home/alice/.ssh") == 0o700
    assert g.owners["/home/alice/.ssh/authorized_keys"] == (1000, 1000)
    assert "PasswordAuthentication no" in g.text("/etc/ssh/sshd_config.d/50-entropi.conf")
    assert g.text("/etc/hostname") == "card\n" and g.text("/etc/hosts").endswith("127.0.1.1\tcard\n")
    assert wants(g, "ssh.service") == "/lib/systemd/system/ssh.service"
    assert ctx.manifest["accounts"]["user"]["action"] == "renamed from pi"


def test_accounts_creates_a_user_from_skel_when_there_is_no_pi(tmp_path: Path, g: FakeGuest) -> None:
    g.write("/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n")
    run(Accounts(), context(tmp_path, g, config(users__name="bob", ssh__enable=False)))
    assert "bob:x:" in g.text("/etc/passwd") and g.text("/home/bob/.bashrc") == "# skel\n"
    assert "PasswordAuthentication yes" in g.text("/etc/ssh/sshd_config.d/50-entropi.conf")  # auto, no keys
    assert not units.is_enabled(g, "ssh.service")


def test_accounts_refuses_an_image_without_sshd(tmp_path: Path, g: FakeGuest) -> None:
    g.rm("/lib/systemd/system/ssh.service")
    with pytest.raises(UserError, match="no ssh.service"):
        run(Accounts(), context(tmp_path, g))


LOCKED_PI = "root:*:19000:0:99999:7:::\npi:!:19000:0:99999:7:::\n"


@pytest.mark.parametrize(("settings", "shadow", "cloud_init", "logins"), [
    ({}, LOCKED_PI, False, []),
    ({"users__authorized_keys": [KEY], "ssh__enable": False}, LOCKED_PI, False, []),
    ({"users__authorized_keys": [KEY]}, LOCKED_PI, False, ["ssh key"]),
    ({"users__password_hash": HASH}, LOCKED_PI, False, ["password"]),
    ({}, None, False, ["password"]),  # the base's own pi has a hash
    ({}, LOCKED_PI, True, ["cloud-init user-data"]),
], ids=["none", "key-but-no-sshd", "key", "hash", "base-password", "cloud-init"])
def test_a_build_with_no_way_to_log_in_warns_in_one_line(
        tmp_path: Path, g: FakeGuest, capsys: pytest.CaptureFixture[str], settings: dict[str, Any],
        shadow: str | None, cloud_init: bool, logins: list[str]) -> None:
    if shadow is not None:
        g.write("/etc/shadow", shadow.encode())
    if cloud_init:
        g.write(accounts.CLOUD_INIT, b"#!/usr/bin/python3\n")
    ctx = run(Accounts(), context(tmp_path, g, config(**settings)))
    assert ctx.manifest["accounts"]["user"]["logins"] == logins
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    if logins:
        assert warnings == []
        return
    assert len(warnings) == 1 and warnings[0].startswith("warning: users: nobody can log in as pi: no password hash")
    assert "(hint: add users.authorized_keys or users.password_hash to the recipe, or build with --set " \
           "users.authorized_keys='[\"~/.ssh/id_ed25519.pub\"]')" in warnings[0]


def test_authorized_keys_rejects_a_private_key_file(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    ctx = context(tmp_path, None, config(users__authorized_keys=[str(key)]))
    with pytest.raises(UserError, match="holds no SSH public key"):
        accounts.authorized_keys(ctx)


# -- first-boot unit and expansion -------------------------------------------------------

def test_firstboot_unit_installs_program_settings_and_enables_it(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(FirstbootUnit(), context(tmp_path, g))
    assert g.mode("/usr/lib/entropi/entropi-firstboot") == 0o755
    assert not g.exists("/usr/lib/entropi/entropi-probe")  # the boot test brings its own probe
    settings = json.loads(g.text("/etc/entropi/firstboot.json"))
    assert settings["boot_dir"] == BOOT and settings == ctx.manifest["firstboot"]["settings"]
    assert {"type": "rsa", "bits": 3072} in settings["key_types"]
    assert wants(g, "entropi-firstboot.service") == "/etc/systemd/system/entropi-firstboot.service"
    assert not g.exists("/etc/systemd/system/entropi-firstboot.service.d")  # 300 s wait: default timeout
    for sshd in ("ssh.service", "ssh@.service"):  # sshd, and each connection of ssh.socket, need it
        link = f"/etc/systemd/system/{sshd}.requires/entropi-firstboot.service"
        assert g.readlink(link) == "/etc/systemd/system/entropi-firstboot.service"
    dropin = "/etc/systemd/system/ssh@.service.d/entropi-firstboot.conf"
    assert g.mode(dropin) == 0o644 and "After=entropi-firstboot.service" in g.text(dropin)


def test_firstboot_unit_installs_the_programs_package_next_to_its_launcher(tmp_path: Path, g: FakeGuest) -> None:
    run(FirstbootUnit(), context(tmp_path, g))
    package = PACKAGE_DIR
    assert package == "/usr/lib/entropi/entropi_firstboot" and g.is_dir(package) and g.mode(package) == 0o755
    for name in PACKAGE_FILES:
        assert g.mode(f"{package}/{name}") == 0o644, name
        assert g.host(f"{package}/{name}").read_bytes() == (FIRSTBOOT / "entropi_firstboot" / name).read_bytes()
    assert sorted(g.host(package).iterdir()) == sorted(g.host(package) / name for name in PACKAGE_FILES)


def test_firstboot_unit_lists_every_module_of_the_programs_package() -> None:
    # A module added to firstboot/entropi_firstboot/ and not to PACKAGE_FILES would not be installed.
    assert sorted(PACKAGE_FILES) == sorted(p.name for p in (FIRSTBOOT / "entropi_firstboot").glob("*.py"))


def test_firstboot_unit_preflight_names_a_missing_module_of_the_package(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "firstboot"
    shutil.copytree(FIRSTBOOT, copy, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (copy / "entropi_firstboot" / "keys.py").unlink()
    monkeypatch.setattr(firstboot_unit, "FIRSTBOOT", copy)
    with pytest.raises(UserError, match=r"entropi_firstboot/keys\.py is missing"):
        FirstbootUnit().check(context(tmp_path, None))


def test_firstboot_unit_raises_the_unit_timeout_for_a_long_wait(tmp_path: Path, g: FakeGuest) -> None:
    run(FirstbootUnit(), context(tmp_path, g, config(firstboot__wait_timeout=1800)))
    conf = g.text("/etc/systemd/system/entropi-firstboot.service.d/timeout.conf")
    assert conf == "[Service]\nTimeoutStartSec=2700\n"


def test_firstboot_unit_needs_python_in_the_image(tmp_path: Path, g: FakeGuest) -> None:
    g.rm("/usr/bin/python3")
    with pytest.raises(UserError, match="no python3"):
        run(FirstbootUnit(), context(tmp_path, g))


def test_expansion_keeps_the_images_own_init_resize(tmp_path: Path, g: FakeGuest) -> None:
    g.write(f"{BOOT}/cmdline.txt", b"root=/dev/mmcblk0p2 init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
    ctx = run(Expansion(), context(tmp_path, g))
    assert ctx.state.expansion and "raspberrypi-sys-mods" in ctx.state.expansion
    assert not g.exists(GROWROOT)


def test_expansion_keeps_the_initramfs_resize_of_a_trixie_image(tmp_path: Path, g: FakeGuest) -> None:
    g.write(f"{BOOT}/cmdline.txt", b"console=tty1 root=PARTUUID=abcd-02 rootwait resize\n")
    g.mkdir_p("/usr/share/initramfs-tools/scripts/local-premount")
    g.write("/usr/share/initramfs-tools/scripts/local-premount/resize_early", b"#!/bin/sh\n")
    g.write("/lib/systemd/system/rpi-resize.service", UNIT.format("Grow").encode())
    units.enable(g, "rpi-resize.service")
    ctx = run(Expansion(), context(tmp_path, g))
    assert ctx.state.expansion == "initramfs resize (`resize` in cmdline.txt) + rpi-resize.service"
    assert not g.exists(GROWROOT)


def test_expansion_does_not_trust_a_resize_token_no_initramfs_script_handles(tmp_path: Path, g: FakeGuest) -> None:
    g.write(f"{BOOT}/cmdline.txt", b"root=PARTUUID=abcd-02 rootwait resize\n")
    ctx = run(Expansion(), context(tmp_path, g))
    assert ctx.state.expansion == GROWROOT_UNIT


def test_expansion_installs_growroot_when_the_image_has_none(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(Expansion(), context(tmp_path, g))
    assert ctx.state.expansion == GROWROOT_UNIT and g.mode(GROWROOT) == 0o755
    assert wants(g, GROWROOT_UNIT, "local-fs.target") == f"/etc/systemd/system/{GROWROOT_UNIT}"


def test_expansion_none_installs_nothing(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(Expansion(), context(tmp_path, g, config(image__expand="none")))
    assert ctx.state.expansion is None and not g.exists(GROWROOT)


# -- cloud-init --------------------------------------------------------------------------

def test_cloud_init_keeps_the_recipes_accounts_and_records_who_keeps_the_host_keys(tmp_path: Path,
                                                                                g: FakeGuest) -> None:
    g.write("/usr/bin/cloud-init", b"")
    g.write(f"{BOOT}/meta-data", b"dsmode: local\n")
    g.write(f"{BOOT}/user-data", b"#cloud-config\n")
    ctx = run(CloudInit(), context(tmp_path, g, config(users__name="alice")))
    dropin = yaml.safe_load(g.text("/etc/cloud/cloud.cfg.d/99_zz-entropi.cfg"))
    assert dropin == {"users": [], "system_info": {"default_user": {"name": "alice", "lock_passwd": False}}}
    record = ctx.manifest["cloud_init"]
    assert record["present"] and record["seed_files"] == ["meta-data", "user-data"]
    assert record["accounts"]["default_user"] == "alice" and "guard" in record["host_keys"]


def test_cloud_init_changes_nothing_in_an_image_without_it(tmp_path: Path, g: FakeGuest) -> None:
    ctx = run(CloudInit(), context(tmp_path, g))
    assert ctx.manifest["cloud_init"] == {"present": False} and not g.exists("/etc/cloud")


# -- overlays ----------------------------------------------------------------------------

def test_overlays_copy_boot_and_rootfs_trees_keeping_rootfs_modes(tmp_path: Path, g: FakeGuest) -> None:
    extra = tmp_path / "extra"
    (extra / "boot").mkdir(parents=True)
    (extra / "boot" / "ssh").write_text("")
    (extra / "rootfs" / "usr/local/bin").mkdir(parents=True)
    tool = extra / "rootfs" / "usr/local/bin/hello"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o750)
    ctx = run(Overlays(), context(tmp_path, g, config(overlays__extra=[str(extra)], overlays__builtin=False)))
    assert g.is_file(f"{BOOT}/ssh")
    assert g.text("/usr/local/bin/hello") == "#!/bin/sh\necho hi\n" and g.mode("/usr/local/bin/hello") == 0o750
    assert sorted(ctx.manifest["overlays"]["files"]) == [f"{BOOT}/ssh", "/usr/local/bin/hello"]


def test_overlays_refuse_a_missing_directory(tmp_path: Path, g: FakeGuest) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Overlays().check(context(tmp_path, g, config(overlays__extra=[str(tmp_path / "nope")])))


# -- stages without libguestfs -----------------------------------------------------------

def test_a_local_base_checks_the_pinned_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTROPI_CACHE", str(tmp_path / "cache"))
    img = tmp_path / "base.img"
    img.write_bytes(b"\0" * 4096)
    digest = hashlib.sha256(img.read_bytes()).hexdigest()
    good = config(base__source="path", base__path=str(img), base__sha256=digest)
    ctx = run(source_stage(good), Context(good, tmp_path, tmp_path))
    assert ctx.state.base_image == img and img.read_bytes() == b"\0" * 4096
    bad = config(base__source="path", base__path=str(img), base__sha256="0" * 64)
    with pytest.raises(UserError, match="(?i)sha-?256"):
        run(source_stage(bad), Context(bad, tmp_path, tmp_path))


def test_work_copy_copies_the_base_and_leaves_it_alone(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"base" * 1024)
    ctx = Context(config(image__grow=""), tmp_path / "out", tmp_path)
    ctx.state.base_image = base
    run(WorkCopy(), ctx)
    assert ctx.state.image is not None and ctx.state.image.read_bytes() == base.read_bytes()
    assert ctx.state.image.parent == tmp_path / "out" and os.stat(ctx.state.image).st_mode & 0o777 == 0o644
    assert not ctx.state.grown and ctx.temp_paths == [ctx.state.image]


def test_finalize_renames_the_image_and_writes_its_checksum(tmp_path: Path) -> None:
    ctx = Context(config(output__bmap=False, output__compress="none", output__name="card"), tmp_path, tmp_path)
    ctx.state.image = tmp_path / ".card.img.tmp"
    ctx.state.image.write_bytes(b"image")
    run(Finalize(), ctx)
    digest = hashlib.sha256(b"image").hexdigest()
    assert ctx.state.final_image == tmp_path / "card.img" and not (tmp_path / ".card.img.tmp").exists()
    assert (tmp_path / "card.img.sha256").read_text() == f"{digest}  card.img\n"
    assert set(ctx.manifest["outputs"]) == {"card.img", "card.img.sha256"}


def test_finalize_needs_the_compressor_and_bmaptool_it_uses() -> None:
    assert Finalize().tools(config(output__bmap=True, output__compress="zst")) == ["bmaptool", "zstd"]
    assert Finalize().tools(config(output__bmap=False, output__compress="none")) == []


def test_open_detects_boot_mount_arch_and_release_from_the_root_tree(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text("PARTUUID=ab-01  /boot  vfat  defaults  0  2\n")
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian 12"\nVERSION_CODENAME=bookworm\n')
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/dash").write_bytes(b"\x7fELF" + bytes(14) + (0xB7).to_bytes(2, "little"))
    assert detect_boot_mount(tmp_path) == "/boot"
    assert detect_arch(tmp_path) == "arm64"
    assert os_release(tmp_path)["VERSION_CODENAME"] == "bookworm"


def test_packages_skips_only_when_there_is_nothing_to_install() -> None:
    assert Packages().skip(config(rngd__package="none")) is not None
    assert Packages().skip(config()) is None and wanted_packages(config()) == ["rng-tools-debian"]
    assert wanted_packages(config(packages__install=["vim"], rngd__package="none")) == ["vim"]


def test_shrink_skips_unless_asked() -> None:
    assert Shrink().skip(config(image__shrink=False)) == "image.shrink is false"
    assert Shrink().skip(config(image__shrink=True)) is None


def mbr_image(path: Path, *parts: tuple[int, int, int]) -> Path:
    """A file holding only an MBR with ``parts`` (type, start sector, sectors)."""
    head = bytearray(512)
    for i, (ptype, start, count) in enumerate(parts):
        struct.pack_into("<B3xB3xII", head, 446 + 16 * i, 0, ptype, start, count)
    head[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(head))
    return path


def test_shrink_refuses_a_root_that_is_not_the_last_partition(tmp_path: Path) -> None:
    ctx = Context(config(image__shrink=True), tmp_path, tmp_path)
    ctx.state.image = mbr_image(tmp_path / "three.img", (0x0C, 8192, 1024), (0x83, 9216, 4096), (0x83, 20480, 64))
    with pytest.raises(UserError, match="partition 2 is not the last partition"):
        Shrink().run(ctx)  # refused before any loop device is set up
    assert ctx.state.shrink_loop is None


def test_open_refuses_a_boot_partition_that_is_not_fat(tmp_path: Path) -> None:
    ctx = Context(config(), tmp_path, tmp_path)
    ctx.state.image = mbr_image(tmp_path / "linux.img", (0x83, 8192, 1024), (0x83, 9216, 4096))
    with pytest.raises(UserError, match="partition 1 is not FAT"):
        OpenImage().run(ctx)  # refused before any loop device is set up
    assert ctx.state.loop is None


def test_base_image_needs_mmdebstrap_only_when_the_base_is_not_cached(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTROPI_CACHE", str(tmp_path))
    cfg = config()
    assert BaseImage().tools(cfg) == list(BUILD_TOOLS)
    cached = BaseSpec(cfg.base.arch, cfg.base.suite, cfg.base.mirror).path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert BaseImage().tools(cfg) == []  # building it needs root and qemu-user: tests/integration
