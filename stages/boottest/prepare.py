"""Before the first boot: what the image holds, and the boot test's own probe put on the cards.

One libguestfs launch over a qcow2 overlay of the image (the image stays byte-identical)
reads what the checks compare against later: the host keys already in the image and in the
base it was built from (pre-baked keys, whatever the base's source), the host name the card
should publish, the user, entropi's units and settings. It writes the probe
(``guest/entropi-probe``) and a known password for the login user into the overlay: every
card is an overlay of that one. Without a manifest beside the image (an image entropi did
not build) these facts come from the image alone.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.build.expansion import INITRAMFS_RESIZE
from stages.core.errors import UserError
from stages.image.disk import Partition, fat_read, read_mbr
from stages.image.guest import open_guest
from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle

GUEST = Path(__file__).with_name("guest")
PROBE_DIR = "/usr/lib/entropi-boottest"
PROBE_UNIT = "/etc/systemd/system/entropi-probe.service"
FIRSTBOOT_UNIT = "/etc/systemd/system/entropi-firstboot.service"
GROWROOT_UNIT = "/etc/systemd/system/entropi-growroot.service"
HWRNG_CONF = "/etc/modules-load.d/entropi-hwrng.conf"


@dataclass
class Facts:
    """What the image holds before its first boot."""

    image_keys: list[str] = field(default_factory=list)  # "type base64" of /etc/ssh/ssh_host_*_key.pub
    base_keys: list[str] = field(default_factory=list)  # the same, in the base the manifest names
    base_source: str = ""  # where base_keys were read ("" when no base could be read)
    hostname: str = ""  # the name the card should publish its keys under
    user: str = ""
    arch: str = ""  # from the ELF header of the image's /bin/sh
    password: str = ""  # set for ``user`` on the cards, so a password attempt is a real one
    firstboot: bool = False  # entropi's first-boot unit is in the image
    firstboot_config: dict[str, Any] = field(default_factory=dict)
    growroot: bool = False
    hwrng_modules: list[str] = field(default_factory=list)  # entropi's modules-load.d file
    root_end_bytes: int = 0  # partition 2's end, before boot
    root_fs_bytes: int = 0  # its ext4 file system's size, before boot
    disk_id: str = ""  # the MBR disk identifier (PARTUUID=<disk_id>-NN), before boot
    resize: bool = False  # the initramfs grows p2 and renews the disk id (``resize`` in cmdline.txt)
    cloud_init: bool = False  # cloud-init is installed; it runs at first boot

    @property
    def pre_baked(self) -> list[str]:
        return sorted(set(self.image_keys) | set(self.base_keys))


def _pubkeys(g: GuestHandle) -> list[str]:
    keys = []
    for path in g.glob_expand("/etc/ssh/ssh_host_*_key.pub"):
        words = read_text(g, path).split()
        if len(words) >= 2:
            keys.append(f"{words[0]} {words[1]}")
    return sorted(keys)


def ext4_size(image: Path, part: Partition) -> int:
    """The ext4 file system's size in bytes, from its superblock (1024 bytes into the partition)."""
    with image.open("rb") as f:
        f.seek(part.start + 1024)
        sb = f.read(1024)
    if sb[56:58] != b"\x53\xef":
        return 0
    blocks = int.from_bytes(sb[4:8], "little") | (int.from_bytes(sb[0x150:0x154], "little") << 32)
    return blocks * (1024 << int.from_bytes(sb[24:28], "little"))


def password_hash(password: str) -> str:
    res = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                         check=True)
    return res.stdout.strip()


def _set_password(g: GuestHandle, user: str, hashed: str) -> bool:
    lines = read_text(g, "/etc/shadow").splitlines()
    found = False
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == user and len(fields) > 2:
            fields[1] = hashed
            lines[i], found = ":".join(fields), True
    if found:
        write_text(g, "/etc/shadow", "\n".join(lines) + "\n", 0o640)
    return found


def _first_user(g: GuestHandle) -> str:
    for line in read_text(g, "/etc/passwd").splitlines():
        fields = line.split(":")
        if len(fields) > 6 and fields[2].isdigit() and 1000 <= int(fields[2]) < 60000:
            return fields[0]
    return ""


ELF_MACHINES = {0xB7: "arm64", 0x28: "armhf"}


def elf_arch(g: GuestHandle) -> str:
    for path in ("/usr/bin/dash", "/bin/dash", "/usr/bin/env"):
        if g.exists(path):
            head = g.pread(path, 20, 0)
            if head[:4] == b"\x7fELF":
                return ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), "")
    return ""


def _read_image(g: GuestHandle, facts: Facts, manifest: dict[str, Any]) -> None:
    facts.image_keys = _pubkeys(g)
    facts.arch = elf_arch(g)
    settings = manifest.get("settings", {})
    facts.user = settings.get("users", {}).get("name") or _first_user(g)
    # The name the card was built for (the recipe's), else the one it holds.
    facts.hostname = settings.get("users", {}).get("hostname") or (
        (read_text(g, "/etc/hostname").split() or ["raspberrypi"])[0] if g.exists("/etc/hostname") else "raspberrypi")
    facts.firstboot = g.exists(FIRSTBOOT_UNIT)
    if g.exists("/etc/entropi/firstboot.json"):
        facts.firstboot_config = json.loads(read_text(g, "/etc/entropi/firstboot.json"))
    facts.growroot = g.exists(GROWROOT_UNIT)
    # What the build recorded, where there is a manifest (a card that lost the mechanism since is
    # then judged against it), else what the image holds.
    facts.cloud_init = bool(manifest.get("cloud_init", {}).get("present")) if manifest else \
        g.exists("/usr/bin/cloud-init")
    if g.exists(HWRNG_CONF):
        facts.hwrng_modules = [w for w in (ln.split("#")[0].strip() for ln in read_text(g, HWRNG_CONF).splitlines())
                               if w]


def _instrument(g: GuestHandle, facts: Facts) -> None:
    g.mkdir_p(PROBE_DIR)
    write_text(g, f"{PROBE_DIR}/entropi-probe", (GUEST / "entropi-probe").read_text(), 0o755)
    write_text(g, PROBE_UNIT, (GUEST / "entropi-probe.service").read_text(), 0o644)
    if facts.user:
        facts.password = secrets.token_urlsafe(12)
        if not _set_password(g, facts.user, password_hash(facts.password)):
            facts.password = ""


def base_image(manifest: dict[str, Any]) -> Path | None:
    """The base image the manifest names as the build's input, when it is still on disk."""
    for item in manifest.get("inputs", []):
        if item.get("label") == "base image" and Path(item.get("path", "")).is_file():
            return Path(item["path"])
    return None


def boot_text(image: Path, boot: Partition, name: str) -> str:
    """A file of the image's boot partition as text; "" when it has none."""
    try:
        return fat_read(image, boot, name).decode(errors="replace")
    except UserError:
        return ""


def flash_hostname(image: Path, boot: Partition) -> str:
    """The per-card host name ``invoke flash --hostname`` wrote on the boot partition, if any."""
    words = boot_text(image, boot, "entropi/hostname").split()
    return words[0] if len(words) == 1 else ""


def prepare(image: Path, disk: Path, manifest: dict[str, Any]) -> Facts:
    """Read the image's facts and write the probe into ``disk`` (a qcow2 overlay of ``image``)."""
    facts = Facts()
    mbr = read_mbr(image)
    facts.disk_id = mbr.disk_id
    boot = next((p for p in mbr.partitions if p.is_fat), None)
    if len(mbr.partitions) >= 2:
        root = mbr.partitions[1]
        facts.root_end_bytes, facts.root_fs_bytes = root.start + root.size, ext4_size(image, root)
    base = base_image(manifest)
    drives = [(disk, "qcow2", False)] + ([(base, "raw", True)] if base else [])
    g = open_guest(drives, str(image))
    try:
        g.mount("/dev/sda2", "/")
        _read_image(g, facts, manifest)
        _instrument(g, facts)
        g.umount_all()
        facts.hostname = (flash_hostname(image, boot) if boot else "") or facts.hostname
        facts.resize = str(manifest.get("image", {}).get("first_boot_expansion", "")).startswith(INITRAMFS_RESIZE) \
            if manifest else boot is not None and "resize" in boot_text(image, boot, "cmdline.txt").split()
        if base:
            g.mount_ro("/dev/sdb2", "/")
            facts.base_keys, facts.base_source = _pubkeys(g), str(base)
            g.umount_all()
        g.shutdown()
    finally:
        g.close()
    return facts
