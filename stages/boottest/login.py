"""What the real OpenSSH client meets: a key login and a password attempt, both trusting only the
known_hosts file the card published, unchanged, under the card's host name (HostKeyAlias)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from stages.boottest.evidence import Boot
from stages.boottest.prepare import Facts

SSH_OPTS = ["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


def trusted(port: int, known_hosts: Path, alias: str) -> list[str]:
    """ssh options that trust exactly ``known_hosts``, looked up under ``alias``."""
    return [*SSH_OPTS, "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"HostKeyAlias={alias}", "-p", str(port)]


def password_attempt(port: int, known_hosts: Path, facts: Facts) -> str:
    """Log in with the password the boot test set for the user: "accepted", "refused" (the server
    answered the attempt with Permission denied) or the client's error (it never got that far)."""
    if not facts.password:
        return "not tried: the image has no such user to set a password for"
    with tempfile.TemporaryDirectory(prefix="entropi-askpass-") as tmp:
        askpass = Path(tmp) / "askpass"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{facts.password}'\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        res = subprocess.run(["ssh", *trusted(port, known_hosts, facts.hostname), "-o", "BatchMode=no",
                              "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
                              "-o", "PreferredAuthentications=password,keyboard-interactive",
                              f"{facts.user}@127.0.0.1", "true"],
                             capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL)
    if res.returncode == 0:
        return "accepted"
    if "Permission denied" in res.stderr:
        return "refused"
    return "error: " + (res.stderr.strip().splitlines() or [f"ssh exited {res.returncode}"])[-1]


def login_and_password(port: int, known_hosts: Path, key: Path, facts: Facts, result: Boot) -> None:
    res = subprocess.run(["ssh", *trusted(port, known_hosts, facts.hostname), "-o", "BatchMode=yes",
                          "-o", "IdentitiesOnly=yes", "-i", str(key), f"{facts.user}@127.0.0.1", "true"],
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    result.login_ok = res.returncode == 0
    result.login_error = res.stderr.strip()[-300:]
    result.password_result = password_attempt(port, known_hosts, facts)
