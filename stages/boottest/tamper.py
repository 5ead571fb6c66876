"""Between card A's second and third boot, with the power off: change the host keys behind the
first-boot guard's back (libguestfs on the card's overlay), as a package, cloud-init or a
regenerator would. One key is replaced by a key made here, and a key of a type the image does
not use is added. The third boot must serve a fresh set, published, none of these."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from stages.image.guest import open_guest
from stages.image.guest_files import write_text

ADDED = "/etc/ssh/ssh_host_dsa_key"  # a type the recipes never make


def _keypair(directory: Path, name: str) -> tuple[bytes, str]:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@elsewhere", "-f", str(path)],
                   check=True)
    return path.read_bytes(), path.with_suffix(".pub").read_text()


def tamper(disk: Path, replace: str) -> dict[str, str]:
    """Replace ``replace`` (e.g. /etc/ssh/ssh_host_ed25519_key) and add ADDED on ``disk`` (qcow2).
    Returns the public keys written ("type base64"), by file."""
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="entropi-tamper-") as tmp:
        pairs = {replace: _keypair(Path(tmp), "replaced"), ADDED: _keypair(Path(tmp), "added")}
        g = open_guest([(disk, "qcow2", False)], str(disk))
        try:
            g.mount("/dev/sda2", "/")
            for path, (private, public) in pairs.items():
                g.write(path, private)
                g.chmod(0o600, path)
                write_text(g, path + ".pub", public, 0o644)
                written[path] = " ".join(public.split()[:2])
            g.umount_all()
            g.shutdown()
        finally:
            g.close()
    return written
