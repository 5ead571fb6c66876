"""Telling the fingerprints of the committed set: the boot partition, /etc/issue, and stdout
(journal and console).

Publishing never holds sshd back: a boot partition that is missing, not mounted, read-only
or full, or an /etc/issue that cannot be written, is a warning; the files are compared with
what they should say at every boot and written again when they differ (first at the next
boot that can write them). What they say depends only on the committed set and the host
name, so an unchanged card writes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional, Tuple

from .committed import source_note
from .device import read_text
from .run import Run

ISSUE_BEGIN = "--- entropi: SSH host key fingerprints ---"
ISSUE_END = "--- end of entropi block ---"
FINGERPRINTS = "ssh_host_fingerprints.txt"
KNOWN_HOSTS = "known_hosts"


def provisional_warning(run: Run) -> Optional[str]:
    record = run.committed or {}
    if not record.get("provisional"):
        return None
    return ("WARNING: SSH host keys were made after the entropy wait timed out (%s after %ss): "
            "they are PROVISIONAL and are replaced at the first boot whose crng is ready before "
            "entropi-firstboot runs" % (record.get("provisional_reason"),
                                       record.get("made", {}).get("waited_seconds")))


def boot_files(run: Run) -> Dict[str, str]:
    """What the boot partition's entropi/ should hold for the committed set."""
    lines = run.fingerprints()
    warning = provisional_warning(run)
    header = ["# " + warning] if warning else []
    known = ["%s %s" % (run.hostname, key["public"]) for key in (run.committed or {}).get("keys", [])]
    return {FINGERPRINTS: "\n".join(header + lines) + "\n", KNOWN_HOSTS: "\n".join(known) + "\n"}


def issue_lines(run: Run) -> List[str]:
    note = source_note(run.committed)
    block = ["SSH host key fingerprints of %s%s:" % (run.hostname, " (%s)" % note if note else ""),
             *run.fingerprints()]
    warning = provisional_warning(run)
    return ([warning] if warning else []) + block


def gaps(run: Run) -> List[str]:
    """What is not published as the committed set says (one line each); a boot partition
    that cannot be read is a warning here, not a gap: nothing could be done about it."""
    found = []
    current, wanted = _issue_texts(run, issue_lines(run))
    if current != wanted:
        found.append("/etc/issue: the fingerprint block differs from the committed set")
    if run.boot_entropi is None:
        run.warn("boot partition %s %s: its published fingerprints were not checked (again at the next boot)"
                 % (run.boot["path"], run.boot_problem()))
        return found
    for name, text in sorted(boot_files(run).items()):
        if read_text(os.path.join(run.boot_entropi, name)) != text:
            found.append("%s/entropi/%s: not published as committed" % (run.boot["path"], name))
    return found


def publish(run: Run) -> None:
    """Boot partition files and /etc/issue, each written only when it differs."""
    run.published = {"boot_partition": _publish_boot(run), "issue": _write_issue(run, issue_lines(run))}


def _publish_boot(run: Run) -> bool:
    if not run.boot_writable:
        run.warn("boot partition %s %s: fingerprints published on the console and in the journal only; "
                 "sshd is not held back; tried again at the next boot" % (run.boot["path"], run.boot_problem()))
        return False
    out = os.path.join(run.machine.boot_dir, "entropi")
    try:
        for name, text in sorted(boot_files(run).items()):
            if read_text(os.path.join(out, name)) != text:
                run.ops.write_atomic(os.path.join(out, name), text)
    except OSError as exc:
        run.warn("cannot publish on the boot partition %s (%s): sshd is not held back; tried again at the "
                 "next boot" % (run.boot["path"], exc))
        return False
    return True


def publish_failure(run: Run) -> None:
    """Best effort: say on the boot partition and in /etc/issue that sshd is kept down."""
    message = ("entropi-firstboot FAILED: %s; sshd is kept down. "
               "It will try again at the next boot." % run.error)
    if run.boot_writable:
        try:
            run.ops.write_atomic(os.path.join(run.machine.boot_dir, "entropi", FINGERPRINTS), "# " + message + "\n")
        except OSError as exc:
            run.warn("cannot write the failure on the boot partition: %s" % exc)
    _write_issue(run, [message])


def _issue_texts(run: Run, lines: List[str]) -> Tuple[str, str]:
    """(/etc/issue now, /etc/issue with the entropi block holding ``lines``)."""
    text = read_text(run.machine.path("/etc/issue")) or ""
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
    return text, "\n".join(new) + "\n"


def _write_issue(run: Run, lines: List[str]) -> bool:
    current, new = _issue_texts(run, lines)
    if current == new:
        return True
    try:
        run.ops.write_atomic(run.machine.path("/etc/issue"), new)
    except OSError as exc:
        run.warn("cannot write /etc/issue: %s" % exc)
        return False
    return True


def report(run: Run) -> None:
    """The console and journal lines: what was found, what was done, warnings, fingerprints,
    then the one verdict line."""
    verdict = run.verdict()
    out = sys.stdout
    for finding in verdict["findings"]:
        out.write("ENTROPI-FOUND %s\n" % finding)
    out.write("ENTROPI-DONE %s: %s\n" % (verdict["action"], verdict["done"]))
    for warning in verdict["warnings"]:
        out.write("ENTROPI-WARNING %s\n" % warning)
    for line in verdict["fingerprints"]:
        out.write("ENTROPI-FINGERPRINT %s\n" % line)
    out.write("ENTROPI-FIRSTBOOT %s\n" % json.dumps(verdict, sort_keys=True))
    out.flush()
