"""Host key files read in Python, with no ssh-keygen run: the .pub line, its SHA-256
fingerprint (as ssh-keygen prints it), and a cheap check that a private key file is whole
and belongs to its .pub.

The check reads OpenSSH's own format (``openssh-key-v1``, what ssh-keygen writes since
OpenSSH 7.8): the public key in its header must be the .pub's, the unencrypted private
section must parse to its end (equal check words, every field, the padding 1, 2, 3, ...),
repeat the public key (ed25519: also inside the 64-byte secret; ecdsa: curve and point)
and, for RSA, hold primes whose product is the public modulus. It catches truncation, a
.pub from another key and most damage; it does not redo the curve arithmetic that would
prove an ed25519 or ecdsa secret scalar right. Keys in the older PEM format (OpenSSH before
7.8) are accepted when non-empty and readable: their pair is not checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Optional, Tuple

KNOWN_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                    "ecdsa-sha2-nistp521", "ssh-rsa")
BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
END = "-----END OPENSSH PRIVATE KEY-----"
MAGIC = b"openssh-key-v1\0"
MISMATCH = "private key does not match its public key"


class KeyFileError(ValueError):
    """A key file that cannot be read as what it claims to be."""


class _Reader:
    """SSH wire format: uint32, string (length-prefixed bytes), mpint."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise KeyFileError("truncated")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big")

    def rest(self) -> bytes:
        return self.data[self.pos:]


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise KeyFileError("not base64") from None


def parse_public(text: str) -> Tuple[str, bytes]:
    """(algorithm, key blob) of a .pub line ``ALGORITHM BASE64 [COMMENT]``."""
    fields = text.split()
    if len(fields) < 2:
        raise KeyFileError("not a public key line")
    algorithm, blob = fields[0], _b64(fields[1])
    if _Reader(blob).string() != algorithm.encode("ascii", "replace"):
        raise KeyFileError("the key inside is not %s" % algorithm)
    if algorithm not in KNOWN_ALGORITHMS:
        raise KeyFileError("unknown key type %r" % algorithm)
    return algorithm, blob


def fingerprint(blob: bytes) -> str:
    """``SHA256:<base64 without padding>``, as ``ssh-keygen -l -E sha256`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def check_private(text: str, blob: bytes) -> Optional[str]:
    """None when the private key file ``text`` is whole and belongs to the public key
    ``blob`` (see the module's docstring for what that covers); otherwise what is wrong."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if lines and lines[0].startswith("-----BEGIN ") and lines[0] != BEGIN:
        return None  # PEM (OpenSSH before 7.8): not checked
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        return "private key damaged (not a whole OpenSSH key file)"
    try:
        return _check_openssh(_b64("".join(lines[1:-1])), blob)
    except KeyFileError as exc:
        return "private key damaged (%s)" % exc


def _check_openssh(data: bytes, blob: bytes) -> Optional[str]:
    if not data.startswith(MAGIC):
        raise KeyFileError("not openssh-key-v1")
    outer = _Reader(data[len(MAGIC):])
    cipher, _kdf, _kdf_options = outer.string(), outer.string(), outer.string()
    if cipher != b"none":
        return "private key is encrypted"
    if outer.uint32() != 1:
        raise KeyFileError("not one key")
    if outer.string() != blob:
        return MISMATCH
    inner = _Reader(outer.string())
    if outer.rest():
        raise KeyFileError("data after the key")
    if inner.uint32() != inner.uint32():
        raise KeyFileError("check words differ")
    problem = _check_fields(inner, _Reader(blob))
    if problem is not None:
        return problem
    inner.string()  # the comment
    padding = inner.rest()
    if padding != bytes(range(1, len(padding) + 1)) or len(inner.data) % 8:
        raise KeyFileError("bad padding")
    return None


def _check_fields(private: _Reader, public: _Reader) -> Optional[str]:
    algorithm = public.string()
    if private.string() != algorithm:
        return MISMATCH
    if algorithm == b"ssh-rsa":
        e, n = public.mpint(), public.mpint()
        n2, e2, _d, _iqmp, p, q = tuple(private.mpint() for _ in range(6))
        return None if (n2, e2) == (n, e) and p * q == n else MISMATCH
    if algorithm == b"ssh-ed25519":
        point = public.string()
        point2, secret = private.string(), private.string()
        return None if point2 == point and secret[32:] == point else MISMATCH
    curve, point = public.string(), public.string()  # ecdsa-sha2-*
    if private.string() != curve or private.string() != point:
        return MISMATCH
    private.mpint()  # the secret scalar
    return None
