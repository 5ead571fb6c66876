"""entropi-firstboot: make SSH host keys on the Pi once the kernel has entropy.

The run in order (execute), its command line and exit codes; the launcher calls main().
"""

from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

from . import PROG, FirstbootError, log
from .config import CONFIG_PATH, ConfigError, default_config, load_config
from .device import DONE_MARKER, UNREADY_FLAG, Machine
from .entropy import wait_for_entropy
from .fileops import FileOps
from .hostname import apply_hostname
from .keys import make_keys
from .publish import publish, publish_failure, report
from .run import Run
from .trust import clean_keys, discard_keys_made_after_timeout

EXIT_OK = 0
EXIT_TIMEOUT_FAIL = 1
EXIT_CONFIG = 2
EXIT_ERROR = 3


def execute(run: Run) -> int:
    machine = run.machine
    apply_hostname(run)
    run.phase = "waiting"
    run.write_evidence()
    clean_keys(run)
    completed = wait_for_entropy(run)
    if not completed:
        run.warn("entropy wait timed out after %ss: %s"
                 % (run.wait["waited_seconds"], run.wait.get("reason")))
        if run.config["on_timeout"] == "fail":
            run.fail("entropy wait timed out (%s)" % run.wait.get("reason"))
            run.write_evidence()
            publish_failure(run)
            return EXIT_TIMEOUT_FAIL
        run.status = "timeout-continue"
        run.ops.write_atomic(machine.path(UNREADY_FLAG), json.dumps(run.wait) + "\n")
    else:
        discard_keys_made_after_timeout(run)
    run.phase = "generating-keys"
    run.write_evidence()
    make_keys(run)
    if run.status == "running":
        run.status = "ok"
    run.phase = "done"
    publish(run)
    run.write_evidence()
    # Stand down: the marker is written last, once everything above is durable.
    # It is not counted for fault injection (a fault "after" it would be a
    # completed run).
    run.ops.counting = False
    run.ops.write_atomic(machine.path(DONE_MARKER), "done\n")
    return EXIT_OK


def record_failure(run: Run, error: str) -> None:
    """Mark the run failed and, best effort, say why on the boot partition, /etc/issue and in
    the evidence."""
    run.fail(error)
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


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    config_path = args.config or os.path.join(args.root, CONFIG_PATH.lstrip("/"))
    ops = FileOps.from_environment()
    error = None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        config, error = default_config(), "configuration error: %s" % exc
    run = Run(Machine(args.root, args.proc, args.sys_dir, config["boot_dir"]), config, ops,
              config_path)
    if error is not None:
        record_failure(run, error)
        report(run)
        return EXIT_CONFIG
    try:
        code = execute(run)
    except (OSError, FirstbootError) as exc:
        record_failure(run, str(exc))
        code = EXIT_ERROR
    report(run)
    return code
