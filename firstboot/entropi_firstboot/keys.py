"""Removing host keys and making a fresh set with ssh-keygen, crash-safely: each private
key's rename is the commit point of its pair."""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, List

from . import FirstbootError, log, seams, sshkey
from .device import SSH_DIR, TMP_PREFIX, read_text
from .run import Run

# openssh-client's ssh-keygen on Debian and Raspberry Pi OS; never looked up through PATH.
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def run_keygen(args: List[str]) -> Any:
    import subprocess  # only runs that make keys pay for the import

    try:
        return subprocess.run([SSH_KEYGEN, *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
    except OSError as exc:
        raise FirstbootError("cannot run %s: %s" % (SSH_KEYGEN, exc)) from None


def remove_all(run: Run, why: str) -> None:
    """Delete every host key and leftover in /etc/ssh: private keys first (a private key on
    disk always has its .pub), then the rest, then make the directory durable."""
    ssh_dir = run.machine.path(SSH_DIR)
    run.ops.makedirs(ssh_dir)
    privates = sorted(glob.glob(os.path.join(ssh_dir, "ssh_host_*_key")))
    rest = sorted(glob.glob(os.path.join(ssh_dir, "ssh_host_*_key.pub")) +
                  glob.glob(os.path.join(ssh_dir, TMP_PREFIX + "*")))
    for path in privates + rest:
        if run.ops.unlink(path):
            run.removed.append({"path": path, "reason": why})
    run.ops.fsync_dir(ssh_dir)


def make_keys(run: Run) -> None:
    """Make every configured type; run.keys gets what the committed set records of each."""
    ssh_dir = run.machine.path(SSH_DIR)
    for spec in run.config["key_types"]:
        run.keys.append(_generate(run, spec, ssh_dir))
    for key in run.keys:
        public = run.machine.path(key["file"]) + ".pub"
        result = run_keygen(["-l", "-E", "sha256", "-f", public])
        if result.returncode != 0:
            raise FirstbootError("ssh-keygen -l -f %s failed: %s" % (public, result.stderr.strip()))
        key["fingerprint"] = result.stdout.strip()
        text = read_text(public) or ""
        try:
            algorithm, blob = sshkey.parse_public(text)
        except sshkey.KeyFileError as exc:
            raise FirstbootError("%s: %s" % (public, exc)) from None
        key["public"] = "%s %s" % (algorithm, text.split()[1])
        key["sha256"] = sshkey.fingerprint(blob)


def _generate(run: Run, spec: Dict[str, Any], ssh_dir: str) -> Dict[str, Any]:
    ops = run.ops
    name = "ssh_host_%s_key" % spec["type"]
    private = os.path.join(ssh_dir, name)
    tmp = os.path.join(ssh_dir, TMP_PREFIX + name + ".tmp")
    ops.unlink(tmp)
    ops.unlink(tmp + ".pub")
    args = ["-q", "-N", "", "-t", spec["type"]]
    if spec["bits"]:
        args += ["-b", str(spec["bits"])]
    args += ["-C", "root@" + run.hostname, "-f", tmp]
    began = seams.monotonic()
    if run.first_keygen_at is None:
        run.first_keygen_at = round(began, 3)
    log("making the %s host key" % spec["type"])
    result = run_keygen(args)
    if result.returncode != 0:
        raise FirstbootError("ssh-keygen %s failed (exit %d): %s"
                             % (" ".join(args), result.returncode, result.stderr.strip()))
    written = seams.monotonic()
    if run.first_key_written_at is None:
        run.first_key_written_at = round(written, 3)
    ops.tick("ssh-keygen wrote " + tmp)
    ops.chmod(tmp, 0o600)
    ops.chmod(tmp + ".pub", 0o644)
    ops.fsync_path(tmp)
    ops.fsync_path(tmp + ".pub")
    # The .pub goes into place first and the private key last: the private key's
    # appearance under its final name is the commit point, so a private key on disk
    # always has its complete .pub next to it.
    ops.rename(tmp + ".pub", private + ".pub")
    ops.fsync_dir(ssh_dir)
    ops.rename(tmp, private)
    ops.fsync_dir(ssh_dir)
    return {"type": spec["type"], "bits": spec["bits"], "file": "%s/%s" % (SSH_DIR, name),
            "path": private, "action": "generated", "started_at": round(began, 3),
            "written_at": round(written, 3), "seconds": round(seams.monotonic() - began, 3)}
