"""The quick check's state: what entropi-guard (next to the launcher) compares at the next boot.

A run that ends clean (a committed set that is not provisional, published on the boot
partition and in /etc/issue, no warning, no error) records in /var/lib/entropi/quick-check
a line per file its decision rests on (size and status change time, which every write,
chmod, chown, rename or replacement moves); the guard then skips the program at every boot
where those lines are the same. Any other run removes the state, so
the next boot runs the program again. The lines come from the guard itself (its --listing),
so what is recorded and what is compared are made by the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional

from .committed import source_note
from .device import COMMITTED, SSH_DIR, read_text
from .run import Run

QUICK = "/var/lib/entropi/quick-check"
MAGIC = "entropi-quick-check 1"
GUARD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "entropi-guard")
SECONDS = "@GUARD_SECONDS@"  # the guard puts its own time here
DONE = "nothing to do: the host keys are the committed set (quick check)"


def clean(run: Run) -> bool:
    """True when the next boot, with every recorded file unchanged, would have nothing to do."""
    published = run.published or {}
    return (run.error is None and run.status == "ok" and bool(run.committed) and not run.provisional
            and not run.warnings and bool(published) and all(published.values()))


def patterns(run: Run) -> List[str]:
    """What the decision reads: every host key file (a pattern, so that an added one shows), the
    committed set, the configuration, the host name files, /etc/issue, the boot partition's files."""
    machine = run.machine
    found = [machine.path(SSH_DIR + "/ssh_host_*"), machine.path(COMMITTED), run.config_path,
             machine.path("/etc/hostname"), machine.path("/etc/hosts"), machine.path("/etc/issue"),
             os.path.join(machine.boot_dir, "entropi", "*")]
    return found


def quiet_verdict(verdict: Dict[str, Any]) -> Dict[str, Any]:
    """The verdict line an unchanged boot's quick check prints: short, because the guard's
    shell reads its state a byte at a time (the fingerprints have their own lines)."""
    kept = ("status", "keys_source", "provisional", "published", "hostname")
    return {"action": "unchanged", "quick_check": True, "guard_seconds": SECONDS,
            **{key: verdict.get(key) for key in kept}}


def state_text(run: Run, verdict: Dict[str, Any]) -> Optional[str]:
    """The state for this run, or None when the files cannot be listed (no quick check then)."""
    files = patterns(run)
    if any(len(p.split()) != 1 for p in files):  # the guard splits the list on blanks
        return None
    try:
        done = subprocess.run(["/bin/sh", GUARD, "--listing", *files], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    quiet = quiet_verdict(verdict)
    note = source_note(run.committed)
    say = ["ENTROPI-DONE unchanged: %s%s" % (DONE, " (%s)" % note if note else "")]
    say += ["ENTROPI-FINGERPRINT %s" % line for line in verdict.get("fingerprints", [])]
    line = "ENTROPI-FIRSTBOOT %s" % json.dumps(quiet, sort_keys=True)
    say.append(line.replace('"%s"' % SECONDS, SECONDS))
    head = [MAGIC, "files " + " ".join(files)] + ["say " + s for s in say] + ["--"]
    return "\n".join(head) + "\n" + done.stdout.decode("utf-8", "replace")


def settle(run: Run, verdict: Dict[str, Any]) -> None:
    """Record the state after a clean run (only when it differs); remove it after any other."""
    path = run.machine.path(QUICK)
    text = state_text(run, verdict) if clean(run) else None
    if text is None:
        if os.path.lexists(path):
            run.ops.unlink(path)
        return
    if read_text(path) != text:
        run.ops.write_atomic(path, text, mode=0o600)
