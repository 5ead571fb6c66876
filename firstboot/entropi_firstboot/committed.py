"""The committed set: the host keys entropi made and published, kept in
/var/lib/entropi/committed.json, and how the keys on disk differ from it (the findings).

Comparing costs a few small reads and SHA-256 sums: no ssh-keygen run. Each key of the
set must be there as committed: a regular private key file, non-empty, readable, mode 0600
(readable by others it may have been copied), that belongs to its .pub (sshkey's cheap
check), and a .pub whose key has the committed fingerprint. Any other host key file in
/etc/ssh is a finding too (a type added by a package or a regenerator).
"""

from __future__ import annotations

import glob
import json
import os
import stat
from typing import Any, Dict, List, Optional

from . import sshkey
from .device import COMMITTED, SSH_DIR, TMP_PREFIX, read_text
from .run import Run

RECORD_VERSION = 1
KEY_FIELDS = ("type", "bits", "file", "public", "sha256", "fingerprint")
MADE_HERE = "made-here"  # keys_source: made on the card by this program
FROM_FLASH = "flash"  # keys_source: made on the flashing host by `invoke flash --host-keys`


def load(run: Run) -> Optional[Dict[str, Any]]:
    """The committed set, or None when nothing was committed yet (or the record is unusable,
    which is a finding: the keys are then made again)."""
    path = run.machine.path(COMMITTED)
    text = read_text(path)
    if text is None:
        if os.path.exists(path):
            run.findings.append("%s cannot be read: the committed set is unknown" % COMMITTED)
        return None
    try:
        record = json.loads(text)
        if record.get("version") != RECORD_VERSION or not isinstance(record.get("keys"), list):
            raise ValueError("version %r" % record.get("version"))
        for key in record["keys"]:
            missing = [field for field in KEY_FIELDS if field not in key]
            if missing:
                raise ValueError("a key without %s" % ", ".join(missing))
    except (ValueError, TypeError, AttributeError) as exc:
        run.findings.append("%s is damaged (%s): the committed set is unknown" % (COMMITTED, exc))
        return None
    return record


def host_key_names(ssh_dir: str) -> List[str]:
    """Every ssh_host_*_key on disk, by private key name (a lone .pub counts as its name)."""
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ssh_dir, "ssh_host_*_key"))}
    names |= {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ssh_dir, "ssh_host_*_key.pub"))}
    return sorted(names)


def compare(run: Run, record: Optional[Dict[str, Any]]) -> List[str]:
    """What differs between the disk and the committed set, one line per finding."""
    ssh_dir = run.machine.path(SSH_DIR)
    found = []
    for leftover in sorted(glob.glob(os.path.join(ssh_dir, TMP_PREFIX + "*"))):
        found.append("%s: left over by an interrupted run" % os.path.basename(leftover))
    on_disk = host_key_names(ssh_dir)
    if record is None:
        if not run.findings:
            found.insert(0, "nothing committed yet: first run")
        return found + ["%s: present before the first run" % name for name in on_disk]
    wanted = [(k["type"], k["bits"]) for k in run.config["key_types"]]
    have = [(k["type"], k["bits"]) for k in record["keys"]]
    if wanted != have:
        found.append("key types configured %s, committed %s" % (_types(wanted), _types(have)))
    committed_names = []
    for key in record["keys"]:
        name = os.path.basename(key["file"])
        committed_names.append(name)
        problem = inspect(run.machine.path(key["file"]), key)
        if problem is not None:
            found.append("%s: %s" % (name, problem))
    found += ["%s: added (not in the committed set)" % name for name in on_disk if name not in committed_names]
    return found


def _types(pairs: List[Any]) -> str:
    return " ".join(t if bits is None else "%s-%d" % (t, bits) for t, bits in pairs) or "none"


def inspect(private: str, key: Dict[str, Any]) -> Optional[str]:
    """None when ``private`` and its .pub are the committed ``key``; else what is wrong."""
    try:
        info = os.lstat(private)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return "unreadable (%s)" % exc.strerror
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty"
    if info.st_mode & 0o077:
        return "private key readable by others (mode %04o)" % (info.st_mode & 0o7777)
    try:
        with open(private, "r", encoding="ascii") as handle:
            text = handle.read()
    except (OSError, ValueError) as exc:
        return "unreadable (%s)" % (getattr(exc, "strerror", None) or exc)
    public = read_text(private + ".pub")
    if public is None:
        return "public key missing or unreadable"
    try:
        _, blob = sshkey.parse_public(public)
    except sshkey.KeyFileError as exc:
        return "public key unusable (%s)" % exc
    found = sshkey.fingerprint(blob)
    if found != key["sha256"]:
        return "replaced (committed %s, found %s)" % (key["sha256"], found)
    return sshkey.check_private(text, blob)


def record_of(run: Run, provisional: bool) -> Dict[str, Any]:
    """The committed set for the keys this run made (run.keys)."""
    return {
        "version": RECORD_VERSION,
        "keys_source": MADE_HERE,
        "provisional": provisional,
        "provisional_reason": run.wait.get("reason") if provisional else None,
        "made": {
            "kernel": run.machine.kernel(),
            "uptime": run.start_snapshot.get("uptime"),
            "waited_seconds": run.wait.get("waited_seconds", 0.0),
            "crng_ready_before_keys": run.crng_ready_before_keys(),
        },
        "keys": [{field: key[field] for field in KEY_FIELDS} for key in run.keys],
    }


def flash_record(keys: List[Dict[str, Any]], made: Dict[str, Any]) -> Dict[str, Any]:
    """The committed set for keys made at flash time (``keys``: KEY_FIELDS each, in the order
    of the configured key types); the card's guard keeps them and publishes them."""
    return {
        "version": RECORD_VERSION,
        "keys_source": FROM_FLASH,
        "provisional": False,
        "provisional_reason": None,
        "made": made,
        "keys": [{field: key[field] for field in KEY_FIELDS} for key in keys],
    }


def source_note(record: Optional[Dict[str, Any]]) -> str:
    """How the console, the evidence and /etc/issue say where the committed keys came from."""
    return "keys from flash" if (record or {}).get("keys_source") == FROM_FLASH else ""
