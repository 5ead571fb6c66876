"""Telling the fingerprints: the boot partition, /etc/issue, and stdout (journal and console)."""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

from .device import read_text
from .run import Run

ISSUE_BEGIN = "--- entropi: SSH host key fingerprints ---"
ISSUE_END = "--- end of entropi block ---"


def timeout_warning(run: Run) -> Optional[str]:
    if run.status != "timeout-continue":
        return None
    return ("WARNING: SSH host keys were made after the entropy wait timed out "
            "(%s after %ss); they may be weak. Regenerate them."
            % (run.wait.get("reason"), run.wait.get("waited_seconds")))


def publish(run: Run) -> None:
    lines = [key["fingerprint"] for key in run.keys]
    warning = timeout_warning(run)
    header = ["# " + warning] if warning else []
    if run.boot_out is not None:
        run.ops.write_atomic(os.path.join(run.boot_out, "ssh_host_fingerprints.txt"),
                             "\n".join(header + lines) + "\n")
        known = []
        for key in run.keys:
            fields = (read_text(key["path"] + ".pub") or "").split()
            known.append("%s %s %s" % (run.hostname, fields[0], fields[1]))
        run.ops.write_atomic(os.path.join(run.boot_out, "known_hosts"),
                             "\n".join(known) + "\n")
    block = ["SSH host key fingerprints of %s:" % run.hostname, *lines]
    if warning:
        block.insert(0, warning)
    write_issue(run, block)


def publish_failure(run: Run) -> None:
    message = ("entropi-firstboot FAILED: %s; sshd is kept down. "
               "It will try again at the next boot." % run.error)
    if run.boot_out is not None:
        run.ops.write_atomic(os.path.join(run.boot_out, "ssh_host_fingerprints.txt"),
                             "# " + message + "\n")
    write_issue(run, [message])


def write_issue(run: Run, lines: List[str]) -> None:
    path = run.machine.path("/etc/issue")
    text = read_text(path) or ""
    kept = []
    inside = False
    for line in text.splitlines():
        if line == ISSUE_BEGIN:
            inside = True
        elif line == ISSUE_END and inside:
            inside = False
        elif not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    # agetty treats a backslash as an escape: keep our lines literal.
    body = [line.replace("\\", "\\\\") for line in lines]
    new = kept + ([""] if kept else []) + [ISSUE_BEGIN] + body + [ISSUE_END, ""]
    run.ops.write_atomic(path, "\n".join(new) + "\n")


def report(run: Run) -> None:
    """The console and journal lines: warnings, fingerprints, then the one verdict line."""
    verdict = run.verdict()
    out = sys.stdout
    for warning in verdict["warnings"]:
        out.write("ENTROPI-WARNING %s\n" % warning)
    for line in verdict["fingerprints"]:
        out.write("ENTROPI-FINGERPRINT %s\n" % line)
    out.write("ENTROPI-FIRSTBOOT %s\n" % json.dumps(verdict, sort_keys=True))
    out.flush()
