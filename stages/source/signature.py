"""``base.signature_url``: an OpenPGP signature checked with gpgv against the one pinned key."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.processes import run
from stages.source.download import fetch_small


def verify_signature(config: Config, path: Path) -> str:
    """gpgv against a throwaway keyring holding only the pinned key; returns the signer's fingerprint."""
    where, base = str(config.recipe), config.base
    sig = fetch_small(base.signature_url, where, "base.signature_url")
    with tempfile.TemporaryDirectory(prefix="entropi-gpg-") as d:
        home = Path(d)
        os.chmod(home, 0o700)
        keyring = home / "pinned.gpg"
        key = Path(base.signing_key).read_bytes()
        if b"-----BEGIN PGP" in key:
            run(["gpg", "--batch", "--no-options", "--homedir", d, "--dearmor", "-o", str(keyring),
                 base.signing_key], hint="base.signing_key should be an OpenPGP public key")
        else:
            keyring.write_bytes(key)
        (home / "sig").write_bytes(sig)
        res = run(["gpgv", "--homedir", d, "--status-fd", "1", "--keyring", str(keyring), str(home / "sig"),
                   str(path)], check=False)
    status = res.stdout.decode(errors="replace")
    m = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]+)", status, re.M)
    if res.returncode == 0 and m:
        return m.group(1)
    why = ("the signature does not match the file" if "BADSIG" in status else
           "it was not made by the pinned key" if "NO_PUBKEY" in status else
           "it is not a readable signature" if "NODATA" in status or "ERRSIG" in status else
           (res.stderr.decode(errors="replace").strip().splitlines() or ["gpgv failed"])[-1])
    raise UserError(where, f"GPG signature check failed for {path.name.removesuffix('.part')}: {why}",
                    key="base.signature_url", hint="the file was not used; check base.signing_key and the mirror")
