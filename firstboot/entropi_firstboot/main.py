"""entropi-firstboot: the guard of the SSH host keys, run at every boot before sshd.

The run in order (execute), its command line and exit codes; the launcher calls main().
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional

from . import PROG, FirstbootError, log, quick
from . import committed as committed_set
from .config import CONFIG_PATH, ConfigError, default_config, load_config
from .device import COMMITTED, Machine
from .entropy import ready_now, wait_for_entropy
from .fileops import FileOps
from .hostname import apply_hostname
from .keys import make_keys, remove_all
from .publish import gaps, publish, publish_failure, report
from .run import Run

EXIT_OK = 0
EXIT_TIMEOUT_FAIL = 1
EXIT_CONFIG = 2
EXIT_ERROR = 3


def execute(run: Run) -> int:
    """Compare the keys on disk with the committed set; keep them (republishing what is not
    published) or make a fresh set as on the first run."""
    apply_hostname(run)
    record = committed_set.load(run)
    run.findings += committed_set.compare(run, record)
    if record is None:
        run.action = "replaced" if os.path.exists(run.machine.path(COMMITTED)) else "first-run"
        return renew(run)
    if run.findings:
        run.action = "replaced"
        return renew(run)
    run.committed = record
    if not record.get("provisional"):
        return keep(run)
    if not ready_now(run):
        run.warn("the host keys are PROVISIONAL (made after a timed-out entropy wait) and the crng was not "
                 "ready when this boot's check began: they stay until a boot where it is")
        return keep(run)
    run.findings.append("the committed keys are provisional (made after a timed-out entropy wait) and the "
                        "crng was ready before this check began: they are replaced")
    run.action = "provisional-replaced"
    return renew(run)


def keep(run: Run) -> int:
    """The keys are the committed set: publish again only what is not published."""
    run.status, run.phase = "ok", "done"
    note = committed_set.source_note(run.committed)
    missing = gaps(run)
    if not missing:
        run.action, run.done = "unchanged", "nothing to do: the host keys are the committed set"
        run.done += " (%s)" % note if note else ""
        run.published = {"boot_partition": run.boot_entropi is not None, "issue": True}
        return EXIT_OK
    run.action = "republished"
    run.findings += missing
    publish(run)
    where = ", ".join(name for name, ok in sorted(run.published.items()) if ok) or "console and journal only"
    run.done = ("%s: kept them and published the committed set (%s)" % (note, where) if note
                else "published the committed set again (%s)" % where)
    run.write_evidence()
    return EXIT_OK


_REMOVED_BECAUSE = {"first-run": "present before the first run",
                    "replaced": "the keys on disk were not the committed set",
                    "provisional-replaced": "provisional: made after a timed-out entropy wait"}


def renew(run: Run) -> int:
    """As on the first run: remove every host key, wait for entropy, make all keys fresh,
    commit them, publish them."""
    for finding in run.findings:
        log("found: " + finding)
    # Part of the view at the start, looked at only now: the quick path skips the walk of /proc.
    run.start_snapshot["rngd_running"] = run.machine.rngd_running()
    run.phase = "waiting"
    run.write_evidence()
    remove_all(run, _REMOVED_BECAUSE[run.action])
    completed = wait_for_entropy(run)
    if not completed:
        run.warn("entropy wait timed out after %ss: %s" % (run.wait["waited_seconds"], run.wait.get("reason")))
        if run.config["on_timeout"] == "fail":
            run.fail("entropy wait timed out (%s)" % run.wait.get("reason"))
            run.done = "made no host keys (on_timeout fail): sshd stays down; tried again at the next boot"
            run.write_evidence()
            publish_failure(run)
            return EXIT_TIMEOUT_FAIL
        run.status = "timeout-continue"
    run.phase = "generating-keys"
    run.write_evidence()
    make_keys(run)
    # Every key is in place under its final name; what follows (publishing, the commit) is the
    # window the boot test cuts the power in (stages/boottest/cards.py, COMMIT_WINDOW).
    log("%d host keys in place; publishing, then committing them" % len(run.keys))
    run.committed = checked_record(run, provisional=not completed)
    if run.status == "running":
        run.status = "ok"
    run.phase = "done"
    publish(run)
    run.done = "made %d fresh host keys (%s) after waiting %ss; committed%s and published them" % (
        len(run.keys), " ".join(k["type"] for k in run.keys), run.wait.get("waited_seconds"),
        " (PROVISIONAL)" if not completed else "")
    run.write_evidence()
    # The commit comes last: a committed set has its evidence and its publication behind it
    # (a reset before this line makes the next boot start over, with fresh keys).
    run.ops.write_atomic(run.machine.path(COMMITTED), json.dumps(run.committed, indent=2, sort_keys=True) + "\n")
    return EXIT_OK


def checked_record(run: Run, provisional: bool) -> Dict[str, Any]:
    """The committed set for the keys just made. The guard's own check must accept them: keys
    it would reject at the next boot would be made again at every boot."""
    record = committed_set.record_of(run, provisional)
    problems = committed_set.compare(run, record)
    if problems:
        raise FirstbootError("the keys just made fail the guard's own check: " + "; ".join(problems))
    return record


def record_failure(run: Run, error: str) -> None:
    """Mark the run failed and, best effort, say why on the boot partition, /etc/issue and in
    the evidence."""
    run.fail(error)
    run.committed = None  # sshd stays down: no set is in force
    run.done = run.done or "failed: sshd stays down; tried again at the next boot"
    log("ERROR: " + error)
    for step in (run.write_evidence, lambda: publish_failure(run)):
        try:
            step()
        except (OSError, FirstbootError) as exc:
            log("cannot record the failure: %s" % exc)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/", help="prefix for /etc, /var and boot_dir")
    parser.add_argument("--proc", default="/proc", help="procfs to read (default /proc)")
    parser.add_argument("--sys", default="/sys", dest="sys_dir", help="sysfs to read (default /sys)")
    parser.add_argument("--config", default=None,
                        help="configuration file (default <root>%s)" % CONFIG_PATH)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None, began: Optional[float] = None) -> int:
    """One run; ``began`` is the launcher's clock reading before its imports (guard_seconds
    then counts them too)."""
    args = parse_args(argv)
    config_path = args.config or os.path.join(args.root, CONFIG_PATH.lstrip("/"))
    ops = FileOps.from_environment()
    error = None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        config, error = default_config(), "configuration error: %s" % exc
    run = Run(Machine(args.root, args.proc, args.sys_dir, config["boot_dir"]), config, ops,
              config_path, began)
    if error is not None:
        record_failure(run, error)
        code = EXIT_CONFIG
    else:
        try:
            code = execute(run)
        except (OSError, FirstbootError) as exc:
            record_failure(run, str(exc))
            code = EXIT_ERROR
    if run.end_snapshot is None:  # no wait in this run: the view as it ends
        run.end_snapshot = run.machine.snapshot(full=False)
    try:  # before the verdict line: a power cut right after it finds the state on disk
        quick.settle(run, run.verdict())
    except OSError as exc:
        log("the quick check's state was not recorded (the next boot runs the whole check): %s" % exc)
    report(run)
    if ops.fault_after is not None:  # tells the crash tests how many operations there are
        log("fault injection: the run ended after %d file operations" % ops.count)
    return code
