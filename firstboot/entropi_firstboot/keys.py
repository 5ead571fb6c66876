"""Making host keys with ssh-keygen, crash-safely: the private key's rename is the commit."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, List

from . import FirstbootError, log, seams
from .device import SSH_DIR, TMP_PREFIX, UNREADY_FLAG
from .run import Run


def run_keygen(args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-keygen", *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def fingerprint(public: str) -> str:
    result = run_keygen(["-l", "-E", "sha256", "-f", public])
    if result.returncode != 0:
        raise FirstbootError("ssh-keygen -l -f %s failed: %s" % (public, result.stderr.strip()))
    return result.stdout.strip()


def make_keys(run: Run) -> None:
    machine = run.machine
    ssh_dir = machine.path(SSH_DIR)
    unready = os.path.exists(machine.path(UNREADY_FLAG))
    for spec in run.config["key_types"]:
        private, public = machine.key_paths(spec["type"])
        if os.path.exists(private):
            run.keys.append({"type": spec["type"], "bits": spec["bits"], "path": private,
                             "action": "kept", "seconds": 0.0})
            if unready:
                run.kept_unready_keys = True
            continue
        run.keys.append(_generate(run, spec, ssh_dir, private, public))
    for key in run.keys:
        key["fingerprint"] = fingerprint(key["path"] + ".pub")


def _generate(run: Run, spec: Dict[str, Any], ssh_dir: str, private: str, public: str) -> Dict[str, Any]:
    ops = run.ops
    tmp = os.path.join(ssh_dir, "%sssh_host_%s_key.tmp" % (TMP_PREFIX, spec["type"]))
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
    # The .pub is published first and the private key last: the private
    # key's appearance under its final name is the commit point, so a
    # private key on disk always has its complete .pub next to it.
    ops.rename(tmp + ".pub", public)
    ops.fsync_dir(ssh_dir)
    ops.rename(tmp, private)
    ops.fsync_dir(ssh_dir)
    return {"type": spec["type"], "bits": spec["bits"], "path": private, "action": "generated",
            "started_at": round(began, 3), "written_at": round(written, 3),
            "seconds": round(seams.monotonic() - began, 3)}
