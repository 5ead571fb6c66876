"""Commands that maintainer scripts would run again and again under qemu-user, run once.

While mmdebstrap installs packages into a foreign-architecture root, every maintainer
script runs emulated. Some commands are expensive there and are run many times although
only the last run counts (measured: README "Offline base images"):

- ``update-initramfs``: the kernel's postinst makes the initramfs, then the initramfs-tools
  trigger makes it again once later packages (busybox, fdisk, udev) have added their hooks.
- ``py3compile``: every Python package's postinst starts the interpreter (twice) to compile
  a few files; cloud-init pulls in about 25 such packages.
- ``update-ca-certificates``: ca-certificates' postinst runs it, then its trigger again.

During the bootstrap each is diverted (dpkg-divert, written into dpkg's diversions file as
mmdebstrap's own eatmydata hook does) to a stub that does nothing (update-initramfs answers
``--version``, which the kernel's hook asks); a customize hook, once every package is in,
removes the stubs and the diversions and runs each real command once. The image ends up with
the same files, no stub and no diversion.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Deferred:
    path: str  # the command, as its package installs it
    final: str  # what the customize hook runs once in the chroot, after every package

    @property
    def diverted(self) -> str:
        return f"{self.path}.entropi-deferred"

    @property
    def stub(self) -> str:
        if self.path.endswith("/update-initramfs"):  # the kernel's postinst.d hook checks --version
            return f'#!/bin/sh\n[ "$1" = --version ] && exec {self.diverted} "$@"\nexit 0\n'
        return "#!/bin/sh\nexit 0\n"


DEFERRED = (
    Deferred("/usr/sbin/update-ca-certificates", "update-ca-certificates --fresh"),
    # Everything the packages' postinsts would have compiled (their public modules, and
    # python3-minimal's private directory), in one interpreter.
    Deferred("/usr/bin/py3compile", "py3compile /usr/lib/python3/dist-packages /usr/share/python3"),
    # Last: the one mkinitramfs run sees every hook and every tool the initramfs scripts use.
    Deferred("/usr/sbin/update-initramfs", "update-initramfs -c -k all"),
)


def essential_hook() -> str:
    """Shell lines (root in "$1") that divert each command to a stub before the packages go in."""
    lines = []
    for d in DEFERRED:
        lines.append(f"printf '%s\\n' {shlex.quote(d.path)} {shlex.quote(d.diverted)} : "
                     '>> "$1/var/lib/dpkg/diversions"')
        lines.append(f'mkdir -p "$1{d.path.rsplit("/", 1)[0]}"')
        lines.append(f"printf '%s' {shlex.quote(d.stub)} > \"$1{d.path}\"")
        lines.append(f'chmod 755 "$1{d.path}"')
    return "\n".join(lines) + "\n"


def customize_hooks() -> list[str]:
    """mmdebstrap customize hooks: the stubs and diversions go, then each command runs once."""
    hooks = []
    for d in DEFERRED:
        hooks.append(f'rm -f "$1{d.path}" && chroot "$1" dpkg-divert --local --rename --remove {d.path}')
    hooks += [f'chroot "$1" {d.final}' for d in DEFERRED]
    return hooks


def mmdebstrap_options() -> list[str]:
    """mmdebstrap options for a faster emulated install: the customize hooks above, and dpkg
    without an fsync per file. Not mmdebstrap's eatmydata hook: its wrappers and the preloaded
    library cost every emulated exec (unpacking took 189 s with it, 142 s without, on the same
    loaded host), and its cleanup left /usr/bin/eatmydata in the image."""
    return ["--dpkgopt=force-unsafe-io", *(f"--customize-hook={h}" for h in customize_hooks())]
