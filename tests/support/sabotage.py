"""Break one property at a time on a COPY of a built image, with libguestfs (the product keeps no
sabotage switch). Each sabotage names the boot-test check it must make fail.

The copy keeps the original's manifest beside it (renamed), so the boot test reads the same
settings and the same base.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from stages.image.guest import open_guest
from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle

Sabotage = Callable[[GuestHandle, str], None]  # (handle with root at / and boot partition at BOOT, BOOT)


def rng_off_in_config(g: GuestHandle, boot: str) -> None:
    """1a: the firmware would turn the RNG off (a last [all] dtparam=random=off)."""
    text = read_text(g, f"{boot}/config.txt")
    write_text(g, f"{boot}/config.txt", text.rstrip("\n") + "\n[all]\ndtparam=random=off\n")


def hwrng_blacklisted(g: GuestHandle, boot: str) -> None:
    """1b (and 5: no /dev/hwrng for rngd): the kernel refuses to load entropi's RNG module."""
    modules = [w.strip() for w in read_text(g, "/etc/modules-load.d/entropi-hwrng.conf").splitlines()
               if w.strip() and not w.startswith("#")]
    cmdline = read_text(g, f"{boot}/cmdline.txt").strip()
    names = ",".join(m.replace("-", "_") for m in modules)
    write_text(g, f"{boot}/cmdline.txt", f"{cmdline} module_blacklist={names}\n")


def wrong_hostname(g: GuestHandle, boot: str) -> None:
    """4: the card takes (and publishes its keys under) another name than the one it was built for."""
    write_text(g, "/etc/hostname", "not-the-recipes-name\n")


def growroot_done(g: GuestHandle, boot: str) -> None:
    """9: entropi-growroot believes it already ran."""
    g.mkdir_p("/var/lib/entropi")
    write_text(g, "/var/lib/entropi/growroot.done", "done\n")


def rngd_on_urandom(g: GuestHandle, boot: str) -> None:
    """5: rngd reads /dev/urandom instead of the hardware RNG."""
    path = "/etc/default/rng-tools-debian"
    write_text(g, path, read_text(g, path).replace("/dev/hwrng", "/dev/urandom"))


def password_logins_on(g: GuestHandle, boot: str) -> None:
    """4: sshd takes passwords although the recipe gave keys (a drop-in read before entropi's)."""
    g.mkdir_p("/etc/ssh/sshd_config.d")
    write_text(g, "/etc/ssh/sshd_config.d/00-passwords.conf", "PasswordAuthentication yes\n")


def no_fsync(g: GuestHandle, boot: str) -> None:
    """6: the first-boot program's fsyncs do nothing (its launcher replaces them before it starts)."""
    path = "/usr/lib/entropi/entropi-firstboot"
    lines = read_text(g, path).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("import sys"))
    lines[at:at] = ["import os", "os.fsync = os.fdatasync = lambda fd: None  # sabotage: nothing is flushed"]
    write_text(g, path, "\n".join(lines) + "\n", 0o755)


def sabotaged_copy(image: Path, dest: Path, name: str, sabotages: list[Sabotage]) -> Path:
    """``dest``/NAME.img: a sparse copy of ``image`` (and its manifest) with ``sabotages`` applied."""
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / f"{name}.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    manifest = image.with_name(image.name.removesuffix(".img") + ".manifest.json")
    if manifest.is_file():
        shutil.copy(manifest, dest / f"{name}.manifest.json")
    boot = json.loads(manifest.read_text()).get("image", {}).get("boot_mount", "/boot/firmware") \
        if manifest.is_file() else "/boot/firmware"
    g = open_guest([(copy, "raw", False)], str(copy))
    try:
        g.mount("/dev/sda2", "/")
        g.mount("/dev/sda1", boot)
        for sabotage in sabotages:
            sabotage(g, boot)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    return copy
