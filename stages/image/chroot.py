"""Running the image's ARM programs on this host: qemu-user's binfmt_misc handlers, and the
environment of apt and dpkg run in (or, through APT_CONFIG, pointed at) the image's root."""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import UserError

BINFMT = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
FIX_BINFMT = ("run ./ci/setup, or by hand: apt-get install qemu-user-static binfmt-support && "
              "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C",
       "HOME": "/root"}
# Emulated apt is slow: no translations to fetch and parse; dpkg without an fsync per file
# (the image is synced as a whole when it is closed, as sync would do).
APT_FAST = ["-o", "Acquire::Languages=none"]
DPKG_FAST = ["-o", "Dpkg::Options::=--force-unsafe-io"]


def require_binfmt(where: str, arch: str) -> None:
    """ARM programs of ``arch`` run on this host only through qemu-user's binfmt_misc handler."""
    if not Path("/proc/sys/fs/binfmt_misc", BINFMT[arch]).exists():
        raise UserError(where, f"no binfmt handler for {arch} ({BINFMT[arch]})", hint=FIX_BINFMT)


def host_env(apt_config: Path) -> dict[str, str]:
    return {**os.environ, **ENV, "APT_CONFIG": str(apt_config), "PATH": os.environ.get("PATH", ENV["PATH"])}
