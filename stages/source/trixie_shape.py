"""The offline trixie base: Debian trixie packages shaped like today's Raspberry Pi OS.

What the Raspberry Pi OS trixie image does at its first boot, imitated with Debian's own
packages and small stand-ins (the files under ``stages/source/pi_trixie/``, written for
entropi; none is taken from Raspberry Pi OS):

- cmdline.txt ends in ``resize``: initramfs scripts (stand-ins for raspberrypi-sys-mods'
  resize_early and set_partuuid) grow partition 2 to the end of the card, give the disk a
  new MBR identifier from /dev/hwrng, rewrite /etc/fstab and cmdline.txt to the new
  PARTUUIDs and drop ``resize``; ``rpi-resize.service`` (ConditionFirstBoot=yes) then has
  systemd-growfs-root grow the file system.
- cloud-init (NoCloud, ``seedfrom: file:///boot/firmware``) with meta-data, a comment-only
  user-data and network-config on the boot partition, Raspberry Pi's ssh settings and
  default user ``pi``; NetworkManager renders netplan.
- No host keys; ssh disabled; Debian's sshd-keygen.service (ConditionFirstBoot=yes) and the
  regenerate_ssh_host_keys stand-in enabled; ``pi`` locked, root ``*``; machine-id
  ``uninitialized``. Kept as a hazard: a random seed (what a customising tool leaves).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from stages.core.errors import UserError
from stages.core.paths import PI_TRIXIE
from stages.core.processes import run

SHAPE_VERSION = 3  # bump whenever shape() changes what lands in the image (part of the base's hash)
PACKAGES = ["cloud-init", "netcat-openbsd", "network-manager", "netplan.io", "fdisk", "busybox"]
# The initramfs also needs the FAT driver (to rewrite cmdline.txt) and the RNG (the disk id).
BOOT_START_MIB = 8
ROOTFS, BOOTFS = PI_TRIXIE / "rootfs", PI_TRIXIE / "bootfs"
SEED_FILES = ("meta-data", "user-data", "network-config")
RESIZE_UNIT = "rpi-resize.service"
KEYGEN_UNIT = "sshd-keygen.service"
KEYGEN_TARGETS = ("ssh.service", "ssh.socket")
NETPLAN = "usr/lib/netplan/00-network-manager-all.yaml"


def cmdline(disk_id: str) -> str:
    """cmdline.txt as Raspberry Pi OS trixie writes it (pi-gen), for this disk identifier."""
    return (f"console=serial0,115200 console=tty1 root=PARTUUID={disk_id}-02 rootfstype=ext4 "
            "fsck.repair=yes rootwait resize\n")


def files() -> dict[str, str]:
    """Every file this shape adds, by its place (rootfs/..., bootfs/...): part of the base's hash."""
    return {str(p.relative_to(PI_TRIXIE)): p.read_text() for p in sorted(PI_TRIXIE.rglob("*")) if p.is_file()}


def essential_hook() -> str:
    """Shell lines for mmdebstrap's essential hook: the initramfs scripts and the other
    files go in before the kernel is installed, so its one mkinitramfs run includes them."""
    return f"cp -R --preserve=mode {shlex.quote(str(ROOTFS))}/. \"$1/\"\n"


def default_user(cloud_cfg: str, name: str) -> str:
    """Debian's /etc/cloud/cloud.cfg with ``name`` as system_info's default user."""
    updated, count = re.subn(r"(?m)^(\s+default_user:\s*\n\s+name:\s*)\S+", rf"\g<1>{name}", cloud_cfg)
    if count != 1:
        raise UserError("base-image", "cloud-init's cloud.cfg has no system_info.default_user.name",
                        hint="the cloud-init package changed its cloud.cfg; update trixie_shape.default_user")
    return updated


def shape(root: Path, boot: Path) -> None:
    """Make the bootstrapped trixie tree ``root`` (boot files staged in ``boot``) Pi OS-shaped."""
    for name in SEED_FILES:
        shutil.copyfile(BOOTFS / name, boot / name)
    (root / NETPLAN).chmod(0o600)
    cfg = root / "etc/cloud/cloud.cfg"
    cfg.write_text(default_user(cfg.read_text(), "pi"))
    keygen = root / "usr/lib/systemd/system" / KEYGEN_UNIT
    if not keygen.is_file():
        raise UserError("base-image", f"trixie's openssh-server has no {KEYGEN_UNIT}",
                        hint="Raspberry Pi OS trixie relies on it; check the openssh-server version")
    # The image as Raspberry Pi OS ships it: ssh off, its first-boot key makers on.
    run(["systemctl", f"--root={root}", "disable", "ssh.service", "ssh.socket"])
    run(["systemctl", f"--root={root}", "enable", KEYGEN_UNIT, RESIZE_UNIT])
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    run(["useradd", "-R", str(root), "-m", "-s", "/bin/bash", "-G", "sudo,adm,dialout,video,plugdev", "pi"])
    (root / "etc/machine-id").write_text("uninitialized\n")
