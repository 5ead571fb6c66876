"""What a root file system is: its architecture (ELF machine of its shell), its boot mount
point (fstab), its release (os-release). Read from a host-side mount of the root."""

from __future__ import annotations

import re
from pathlib import Path

from stages.core.errors import UserError

ELF_MACHINE = {0xB7: "arm64", 0x28: "armhf"}


def detect_arch(root: Path) -> str:
    candidates = [root / p for p in ("usr/bin/dash", "usr/bin/bash", "bin/dash", "bin/bash")]
    target = next((p for p in candidates if p.is_file() and not p.is_symlink()), None)
    if target is None:
        raise UserError("image", "no shell in the root file system", hint="is this a Linux image?")
    head = target.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise UserError("image", "cannot tell the architecture (/bin/sh is not ELF)", hint="is this a Linux image?")
    machine = int.from_bytes(head[18:20], "little")
    if machine not in ELF_MACHINE:
        raise UserError("image", f"unsupported architecture (ELF machine {machine:#x})", hint="use an ARM image")
    return ELF_MACHINE[machine]


def detect_boot_mount(root: Path) -> str:
    fstab = (root / "etc" / "fstab").read_text(errors="replace") if (root / "etc" / "fstab").exists() else ""
    for line in fstab.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "vfat":
            return fields[1]
    return "/boot/firmware" if (root / "boot" / "firmware").is_dir() else "/boot"


def os_release(root: Path) -> dict[str, str]:
    path = root / "etc" / "os-release"
    if not path.exists() and (root / "usr" / "lib" / "os-release").exists():
        path = root / "usr" / "lib" / "os-release"
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r'^([A-Z_]+)="?([^"]*)"?$', line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    return values
