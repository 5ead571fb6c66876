"""What one boot showed, and the readers of the guest's evidence over the network.

What a boot shows: the boot test's own probe's ``ENTROPI-PROBE {json}`` (also in
/run/entropi-probe.json), the host keys sshd serves (ssh-keyscan), what the OpenSSH client
met logging in, the known_hosts file published on the boot partition, and the first-boot
unit's ``ENTROPI-FINGERPRINT`` console lines (what it says it published).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from stages.boottest.faults import Failure


@dataclass
class Boot:
    """What one boot showed."""

    name: str
    log: str = ""
    firstboot: dict[str, Any] | None = None
    fingerprints: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # "type base64" served by sshd
    probe: dict[str, Any] | None = None
    login_ok: bool | None = None
    login_error: str = ""
    password_result: str = "not tried"  # a real password attempt: "accepted", "refused" or what went wrong
    milestones: dict[str, float] = field(default_factory=dict)
    ssh_seconds: float | None = None
    error: str = ""
    failure: Failure | None = None  # the console line that ended the boot, and whose fault it was
    cut_line: str = ""  # the console line at which the power was cut
    cut_after: float | None = None  # seconds from that line reaching the console log to QEMU killed
    after_cut_known_hosts: str = ""  # entropi/known_hosts on the card right after the power cut
    tampered: dict[str, str] = field(default_factory=dict)  # host keys written behind the guard's back, by file
    card_after: dict[str, Any] = field(default_factory=dict)  # the card read on the host after power off (resize)


def guard_line(log: str) -> dict[str, Any]:
    """The first ``ENTROPI-FIRSTBOOT {json}`` line of a boot: what the guard says it found and did
    (shown as evidence beside the independent readings, never a verdict); {} when there is none."""
    m = re.search(r"ENTROPI-FIRSTBOOT (\{.*\})", log)
    try:
        said = json.loads(m.group(1)) if m else {}
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}


def keyscan(port: int, timeout: int = 10) -> list[str]:
    res = subprocess.run(["ssh-keyscan", "-T", str(timeout), "-t", "rsa,ecdsa,ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True)
    return sorted(" ".join(line.split()[1:3]) for line in res.stdout.splitlines()
                  if line and not line.startswith("#") and len(line.split()) >= 3)


def known_hosts_keys(text: str | None) -> list[str]:
    return sorted(" ".join(line.split()[1:3]) for line in (text or "").splitlines()
                  if line.strip() and not line.startswith("#") and len(line.split()) >= 3)


def known_hosts_names(text: str | None) -> list[str]:
    """The host names a known_hosts file is written for (its first column, split at commas)."""
    return sorted({name for line in (text or "").splitlines() if line.strip() and not line.startswith("#")
                   and len(line.split()) >= 3 for name in line.split()[0].split(",")})


def fingerprint(key: str) -> str:
    res = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=key + "\n",
                         capture_output=True, text=True)
    parts = res.stdout.split()
    return parts[1] if len(parts) > 1 else ""
