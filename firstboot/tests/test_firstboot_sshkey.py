"""Host key files read in Python (entropi_firstboot/sshkey.py), against keys ssh-keygen made."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import pytest

from firstboot.entropi_firstboot import sshkey
from firstboot.tests.helpers import SSH_KEYGEN, keygen

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")
KINDS = [("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    """(type, bits) -> (private key text, .pub text), made by ssh-keygen."""
    work = tmp_path_factory.mktemp("keys")
    made = {}
    for ktype, bits in KINDS:
        path = work / f"{ktype}{bits or ''}"
        res = keygen("-q", "-N", "", "-t", ktype, *(["-b", str(bits)] if bits else []), "-f", str(path))
        assert res.returncode == 0, res.stderr
        made[(ktype, bits)] = (path.read_text(), Path(str(path) + ".pub").read_text(), path)
    return made


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k[0]}{k[1] or ''}")
def test_fingerprint_is_what_ssh_keygen_prints_and_the_pair_passes(keys, kind):
    private, public, path = keys[kind]
    algorithm, blob = sshkey.parse_public(public)
    listed = keygen("-l", "-E", "sha256", "-f", str(path) + ".pub").stdout.split()

    assert algorithm == public.split()[0] and sshkey.fingerprint(blob) == listed[1]
    assert sshkey.check_private(private, blob) is None


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k[0]}{k[1] or ''}")
def test_a_private_key_of_another_key_or_a_cut_one_is_refused(keys, kind):
    private, public, _ = keys[kind]
    _, blob = sshkey.parse_public(public)
    other = next(v for k, v in keys.items() if k != kind)
    lines = private.splitlines()

    assert sshkey.check_private(other[0], blob) == sshkey.MISMATCH
    assert sshkey.check_private("\n".join(lines[:-3] + lines[-1:]), blob).startswith("private key damaged")
    assert sshkey.check_private("\n".join(lines[:-1]), blob).startswith("private key damaged")


def test_a_changed_byte_in_the_private_section_is_seen():
    # An ed25519 key whose secret no longer repeats the public point (the last 32 bytes).
    private, public = _ed25519()
    body = bytearray(base64.b64decode("".join(private.splitlines()[1:-1])))
    point = base64.b64decode(public.split()[1])[-32:]
    where = body.rindex(point)  # the copy inside the 64-byte secret
    body[where] ^= 1
    text = "\n".join([sshkey.BEGIN, base64.b64encode(bytes(body)).decode(), sshkey.END]) + "\n"

    assert sshkey.check_private(text, sshkey.parse_public(public)[1]) == sshkey.MISMATCH


def _ed25519() -> tuple:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "k"
        assert keygen("-q", "-N", "", "-t", "ed25519", "-f", str(path)).returncode == 0
        return path.read_text(), Path(str(path) + ".pub").read_text()


def test_an_encrypted_key_and_a_pem_key(tmp_path):
    assert keygen("-q", "-N", "secret", "-t", "ed25519", "-f", str(tmp_path / "enc")).returncode == 0
    assert keygen("-q", "-N", "", "-t", "rsa", "-b", "2048", "-m", "PEM", "-f", str(tmp_path / "pem")).returncode == 0
    enc_blob = sshkey.parse_public((tmp_path / "enc.pub").read_text())[1]
    pem_blob = sshkey.parse_public((tmp_path / "pem.pub").read_text())[1]

    assert sshkey.check_private((tmp_path / "enc").read_text(), enc_blob) == "private key is encrypted"
    assert (tmp_path / "pem").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert sshkey.check_private((tmp_path / "pem").read_text(), pem_blob) is None  # older format: not checked


@pytest.mark.parametrize("line, problem", [
    ("ssh-ed25519", "not a public key line"),
    ("ssh-ed25519 !!!notbase64", "not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMx+il1bOHHOFICDdFKxVP2H1+oKkTUAK2UknndSIBdo", "the key inside is not ssh-rsa"),
    ("ssh-dss AAAAB3NzaC1kc3MAAAA=", "unknown key type 'ssh-dss'"),
])
def test_public_lines_that_cannot_be_used(line, problem):
    with pytest.raises(sshkey.KeyFileError, match=problem):
        sshkey.parse_public(line)
