"""Which host keys are kept: none made before the first run, only sound pairs of the
configured type after a reset, none made after a timed-out wait once a wait completes."""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, Optional

from .device import DONE_MARKER, SSH_DIR, STARTED_MARKER, TMP_PREFIX, UNREADY_FLAG, read_text
from .fileops import FileOps
from .keys import run_keygen
from .run import Run


def expected_algorithm(spec: Dict[str, Any]) -> str:
    if spec["type"] == "ed25519":
        return "ssh-ed25519"
    if spec["type"] == "ecdsa":
        return "ecdsa-sha2-nistp%d" % (spec["bits"] or 256)
    return "ssh-rsa"


def check_pair(ops: FileOps, spec: Dict[str, Any], private: str, public: str) -> Optional[str]:
    """None if private+public form a sound pair of the configured type, else why not."""
    if os.path.getsize(private) == 0:
        return "private key is empty"
    if not os.path.exists(public):
        return "public key is missing"
    if os.path.getsize(public) == 0:
        return "public key is empty"
    ops.chmod(private, 0o600)  # ssh-keygen refuses to read a key others can read
    ops.chmod(public, 0o644)
    derived = run_keygen(["-y", "-P", "", "-f", private])
    if derived.returncode != 0:
        return "private key unreadable (%s)" % derived.stderr.strip().replace("\n", " ")
    published = (read_text(public) or "").split()
    derived_fields = derived.stdout.split()
    if published[:2] != derived_fields[:2] or len(published) < 2:
        return "public key does not match the private key"
    if published[0] != expected_algorithm(spec):
        return "key is %s, configured %s" % (published[0], expected_algorithm(spec))
    if spec["type"] == "rsa" and spec["bits"]:
        listed = run_keygen(["-l", "-f", public])
        fields = listed.stdout.split()
        if listed.returncode != 0 or not fields or fields[0] != str(spec["bits"]):
            return "rsa key has %s bits, configured %d" % (fields[0] if fields else "?", spec["bits"])
    return None


def remove_pair(ops: FileOps, private: str, public: str) -> None:
    # The private key goes first: a private key on disk always has its .pub.
    ops.unlink(private)
    ops.unlink(public)
    ops.fsync_dir(os.path.dirname(private))


def clean_keys(run: Run) -> None:
    machine = run.machine
    ssh_dir = machine.path(SSH_DIR)
    run.ops.makedirs(ssh_dir)
    for leftover in sorted(glob.glob(os.path.join(ssh_dir, TMP_PREFIX + "*"))):
        run.ops.unlink(leftover)
        run.removed.append({"path": leftover, "reason": "leftover of an interrupted run"})
    fresh = not (os.path.exists(machine.path(STARTED_MARKER))
                 or os.path.exists(machine.path(DONE_MARKER)))
    if fresh:
        _forget_keys_made_before_the_first_run(run, ssh_dir)
        return
    for spec in run.config["key_types"]:
        private, public = machine.key_paths(spec["type"])
        if not os.path.exists(private):
            if os.path.exists(public):
                run.ops.unlink(public)
                run.ops.fsync_dir(ssh_dir)
                run.removed.append({"path": public, "reason": "public key without private key"})
            continue
        reason = check_pair(run.ops, spec, private, public)
        if reason is not None:
            run.warn("removing %s: %s" % (private, reason))
            remove_pair(run.ops, private, public)
            run.removed.append({"path": private, "reason": reason})


def _forget_keys_made_before_the_first_run(run: Run, ssh_dir: str) -> None:
    # Keys present before our first run were made elsewhere (baked into
    # the image, or by a regenerator without entropy): never trust them.
    ops, machine = run.ops, run.machine
    privates = sorted(glob.glob(os.path.join(ssh_dir, "ssh_host_*_key")))
    publics = sorted(glob.glob(os.path.join(ssh_dir, "ssh_host_*_key.pub")))
    for path in privates + publics:
        ops.unlink(path)
        run.removed.append({"path": path, "reason": "present before the first run"})
    ops.fsync_dir(ssh_dir)
    ops.unlink(machine.path(UNREADY_FLAG))
    ops.write_atomic(machine.path(STARTED_MARKER),
                     "first run started at uptime %s\n" % run.start_snapshot["uptime"])


def discard_keys_made_after_timeout(run: Run) -> None:
    """Keys made by a run that timed out are replaced once a wait completes."""
    flag = run.machine.path(UNREADY_FLAG)
    if not os.path.exists(flag):
        return
    for spec in run.config["key_types"]:
        private, public = run.machine.key_paths(spec["type"])
        if os.path.exists(private) or os.path.exists(public):
            remove_pair(run.ops, private, public)
            run.removed.append({"path": private,
                                "reason": "made after a wait timeout; replaced now"})
    run.ops.unlink(flag)
    run.ops.fsync_dir(os.path.dirname(flag))
