"""sshd's drop-in, rngd's defaults, a dpkg diversion and the deferring key regenerator."""

from __future__ import annotations

from stages.core.errors import UserError

RNGD_PACKAGES = ("rng-tools-debian", "rng-tools5")
RPI_REGENERATOR = "/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys"


def sshd_dropin(password_authentication: bool) -> str:
    """Contents of /etc/ssh/sshd_config.d/50-entropi.conf.

    sshd keeps the first value it reads for a keyword and reads sshd_config.d/*.conf in
    order, so 50- wins over the main file's later lines and leaves room for the user.
    """
    yes = "yes" if password_authentication else "no"
    return ("# Written by entropi: SSH logins. Root never logs in; passwords only when the\n"
            "# recipe allows them (ssh.password_authentication).\n"
            f"PasswordAuthentication {yes}\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin no\n")


def rngd_defaults(package: str, device: str, fill_bits: int) -> str:
    """Contents of rngd's defaults file: /etc/default/rng-tools-debian or, for rng-tools5,
    /etc/default/rng-tools. ``fill_bits`` is the watermark up to which rngd fills the pool.
    """
    if package not in RNGD_PACKAGES:
        raise ValueError(f"unknown rngd package {package!r}; expected one of {', '.join(RNGD_PACKAGES)}")
    if not device.startswith("/dev/") or any(c in device for c in '"\n '):
        raise ValueError(f"not a device path (config.py validates rngd.device): {device!r}")
    if fill_bits <= 0:
        raise ValueError(f"fill watermark must be positive, got {fill_bits}")
    head = ("# Written by entropi: rngd feeds the hardware RNG to the kernel; fill at most half\n"
            "# the pool (the watermark below), so the hardware RNG is never the only source.\n")
    if package == "rng-tools5":
        return head + f'RNGDOPTIONS="--rng-device={device} --fill-watermark={fill_bits}"\n'
    return head + f'HRNGDEVICE={device}\nRNGDOPTIONS="--fill-watermark={fill_bits}"\n'


def with_diversion(diversions: str, path: str, divert_to: str) -> str:
    """/var/lib/dpkg/diversions with a local diversion of ``path`` to ``divert_to`` (what
    ``dpkg-divert --local --rename --divert TO --add PATH`` records): triples of lines,
    diverted path, where the package's file goes, and ``:`` for a local diversion.
    An existing diversion of ``path`` is kept as it is; other entries are untouched.
    """
    lines = diversions.splitlines()
    if len(lines) % 3:
        raise UserError("/var/lib/dpkg/diversions", f"{len(lines)} lines, not triples",
                        hint="the image's dpkg database is damaged; run dpkg-divert --list in it")
    if path in lines[0::3]:
        return diversions
    body = diversions if diversions.endswith("\n") or not diversions else diversions + "\n"
    return body + f"{path}\n{divert_to}\n:\n"


def deferring_regenerator(script: str) -> str:
    """What stands in for Raspberry Pi OS's key regenerator: it makes no keys and says why.

    Its first-boot ``init=`` script (which also fixes the PARTUUIDs and expands the root
    file system) and its unit both call ``script``; they go on working, and entropi's own
    unit makes the keys once the kernel's random generator is ready.
    """
    return ("#!/bin/sh\n"
            "# Written by entropi. SSH host keys are made by entropi-firstboot.service once the\n"
            "# kernel's random generator is ready; the packaged script is diverted to\n"
            f"# {script}.distrib (dpkg-divert --list).\n"
            "echo 'regenerate_ssh_host_keys: left to entropi-firstboot.service' >&2\n"
            "exit 0\n")
