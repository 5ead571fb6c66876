"""The offline bookworm base's own shape: Raspberry Pi OS as it was before trixie.

systemd-networkd with DHCP on the wired interfaces, sshd enabled, user ``pi`` with the
password every old Raspbian image had, and the pre-baked secrets a card must not keep:
the host keys openssh-server's postinst made in the chroot and a populated machine-id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stages.core.errors import UserError
from stages.core.files import write_file as write
from stages.core.processes import run, text

PI_PASSWORD = "raspberry"  # the known password of old Raspbian images
NETWORK = """\
[Match]
Name=eth* en* usb*

[Network]
DHCP=yes
"""


def shape(root: Path) -> None:
    """systemd-networkd, sshd on, pi with the password everyone knows, baked host keys and machine-id."""
    write(root / "etc" / "systemd" / "network" / "10-wired.network", NETWORK)
    run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service", "ssh.service"])
    run(["useradd", "-R", str(root), "-m", "-s", "/bin/bash", "-G", "sudo,adm,dialout,video,plugdev", "pi"])
    pw = text(["openssl", "passwd", "-6", PI_PASSWORD])
    run(["usermod", "-R", str(root), "-p", pw, "pi"])
    # The pre-baked secrets: host keys (openssh-server's postinst made them) and an id.
    if not list((root / "etc" / "ssh").glob("ssh_host_*_key")):
        raise UserError("base-image", "openssh-server made no host keys", hint="check the mmdebstrap log")
    write(root / "etc/machine-id", hashlib.sha256(os.urandom(32)).hexdigest()[:32] + "\n", 0o444)
