"""The host's records of keys made at flash time: a known_hosts file and SSHFP records.

Each card's lines replace the lines for its host name (in known_hosts also a name in a
comma list or hashed, `|1|salt|hash`); every other line is kept as it was. Both files are
written under a temporary name and renamed: a reader sees the old file or the new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from stages.core import progress
from stages.core.files import atomic_output, fsync_path
from stages.flash.hostkeys import HostKeys, PublicKey

# RFC 4255/6594/7479 algorithm numbers; fingerprint types 1 (SHA-1) and 2 (SHA-256), as ssh-keygen -r
SSHFP_ALGORITHMS = {"ssh-rsa": 1, "ssh-dss": 2, "ecdsa-sha2-nistp256": 3, "ecdsa-sha2-nistp384": 3,
                    "ecdsa-sha2-nistp521": 3, "ssh-ed25519": 4}


def names_host(hosts: str, name: str) -> bool:
    """Whether a known_hosts line's host field (a comma list, entries possibly hashed) names ``name``."""
    for entry in hosts.split(","):
        if entry == name:
            return True
        if entry.startswith("|1|") and entry.count("|") == 3:
            _, _, salt, digest = entry.split("|")
            try:
                mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            except ValueError:
                continue
            if hmac.compare_digest(base64.b64encode(mac).decode(), digest):
                return True
    return False


def merged_known_hosts(old: str, cards: Mapping[str, Sequence[PublicKey]]) -> str:
    """``old`` without the lines for the cards' names (markers such as @revoked are kept), then theirs."""
    def for_a_card(line: str) -> bool:
        fields = line.split()
        return bool(fields) and not line.startswith(("#", "@")) and any(names_host(fields[0], n) for n in cards)

    kept = [line for line in old.splitlines() if not for_a_card(line)]
    return "".join(f"{line}\n" for line in kept + [f"{name} {key.public}"
                                                   for name, keys in cards.items() for key in keys])


def sshfp_records(name: str, keys: Iterable[PublicKey]) -> list[str]:
    """`NAME IN SSHFP ALGORITHM TYPE HEX`, SHA-1 then SHA-256 per key, as `ssh-keygen -r NAME` prints them."""
    lines = []
    for key in keys:
        algorithm, b64 = key.public.split()[:2]
        blob = base64.b64decode(b64)
        number = SSHFP_ALGORITHMS[algorithm]
        lines += [f"{name} IN SSHFP {number} 1 {hashlib.sha1(blob).hexdigest()}",
                  f"{name} IN SSHFP {number} 2 {hashlib.sha256(blob).hexdigest()}"]
    return lines


def merged_zone(old: str, cards: Mapping[str, Sequence[PublicKey]]) -> str:
    """``old`` without the SSHFP records of the cards' names, then theirs."""
    def for_a_card(line: str) -> bool:
        fields = line.split()
        return len(fields) >= 3 and fields[0] in cards and fields[1:3] == ["IN", "SSHFP"]

    kept = [line for line in old.splitlines() if not for_a_card(line)]
    records = [record for name, keys in cards.items() for record in sshfp_records(name, keys)]
    return "".join(f"{line}\n" for line in kept + records)


def replace_text(path: Path, change: str) -> None:
    """Write ``change`` to ``path`` atomically, keeping the mode of the file it replaces (new: 0644)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    with atomic_output(path) as tmp:
        tmp.write_text(change)
        tmp.chmod(mode)
        fsync_path(tmp)
    fsync_path(path.parent)


def record_on_host(plan: HostKeys, cards: Mapping[str, Sequence[PublicKey]]) -> None:
    """Add the cards' keys to known_hosts and their SSHFP records to the zone file."""
    if not cards:
        return
    for path, merge in ((plan.known_hosts, merged_known_hosts), (plan.sshfp, merged_zone)):
        replace_text(path, merge(path.read_text() if path.exists() else "", cards))
    progress.info(f"host keys of {', '.join(cards)}: known_hosts {plan.known_hosts}, SSHFP records {plan.sshfp}")
