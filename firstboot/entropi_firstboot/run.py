"""One run's record: what it found, waited for, made, removed and published; its evidence
and its verdict (the console line)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from . import PROG, VERSION, log, seams
from .device import EVIDENCE_LOG, Machine
from .fileops import FileOps

# What the verdict shows of the kernel's view (the evidence has all of it).
_VIEW = ("uptime", "crng_ready", "entropy_avail", "poolsize")


class Run:
    def __init__(self, machine: Machine, config: Dict[str, Any], ops: FileOps,
                 config_path: str, began: Optional[float] = None) -> None:
        self.machine = machine
        self.config = config
        self.ops = ops
        guard = machine.guard_view()  # the guard's start, when it started the program
        self.began = guard["monotonic"] if guard else seams.monotonic() if began is None else began
        self.warnings: List[str] = []
        self.findings: List[str] = []
        self.removed: List[Dict[str, str]] = []
        self.keys: List[Dict[str, Any]] = []
        self.hostname = "localhost"
        self.hostname_source = "default"
        self.action = "checking"
        self.done = ""  # what the run did, in one line
        self.committed: Optional[Dict[str, Any]] = None  # the set in force at the end
        self.published: Dict[str, Any] = {"boot_partition": None, "issue": None}
        self.crng_ready_at: Optional[float] = None
        self.level_reached_at: Optional[float] = None
        self.first_keygen_at: Optional[float] = None
        self.first_key_written_at: Optional[float] = None
        self.wait: Dict[str, Any] = {}
        self.status = "running"
        self.phase = "start"
        self.error: Optional[str] = None
        self.config_path = config_path
        self.start_snapshot = guard or machine.snapshot(full=False)
        self.end_snapshot: Optional[Dict[str, Any]] = None
        self.boot = self._boot_partition(config["boot_dir"])

    def _boot_partition(self, boot_dir: str) -> Dict[str, Any]:
        """Where the boot partition stands: mounted (read-write or read-only), or not."""
        path = self.machine.boot_dir
        if not os.path.isdir(path):
            return {"path": boot_dir, "state": "missing", "fstype": None}
        mount = self.machine.mount(path)
        if mount is None:
            return {"path": boot_dir, "state": "not-mounted", "fstype": None}
        return {"path": boot_dir, "state": "read-only" if mount[1] else "mounted", "fstype": mount[0]}

    @property
    def boot_entropi(self) -> Optional[str]:
        """<boot_dir>/entropi when the boot partition is mounted (to read from)."""
        if self.boot["state"] in ("mounted", "read-only"):
            return os.path.join(self.machine.boot_dir, "entropi")
        return None

    @property
    def boot_writable(self) -> bool:
        return self.boot["state"] == "mounted"

    def boot_problem(self) -> str:
        """Why nothing can be written on the boot partition."""
        return {"missing": "does not exist", "not-mounted": "is not mounted",
                "read-only": "is mounted read-only"}.get(self.boot["state"], "cannot be written")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log("WARNING: " + message)

    def fail(self, error: str) -> None:
        self.status, self.phase, self.error = "failed", "failed", error

    @property
    def provisional(self) -> bool:
        return bool(self.committed and self.committed.get("provisional"))

    def crng_ready_before_keys(self) -> bool:
        if self.first_keygen_at is None:  # no key made in this run: as the committed set says
            made = (self.committed or {}).get("made", {})
            return bool(self.committed) and not self.provisional and bool(made.get("crng_ready_before_keys"))
        return self.crng_ready_at is not None and self.crng_ready_at <= self.first_keygen_at

    def guard_seconds(self) -> float:
        return round(seams.monotonic() - self.began, 3)

    def fingerprints(self) -> List[str]:
        return [key["fingerprint"] for key in (self.committed or {}).get("keys", [])]

    def evidence(self) -> Dict[str, Any]:
        return {
            "program": PROG, "version": VERSION, "phase": self.phase, "status": self.status,
            "action": self.action, "findings": self.findings, "done": self.done, "error": self.error,
            "hostname": self.hostname, "hostname_source": self.hostname_source,
            "kernel": self.machine.kernel(), "hwrng": self.machine.hwrng(),
            "clock": "CLOCK_MONOTONIC seconds (time.monotonic)",
            "started_at": round(self.began, 3),
            "at_start": self.start_snapshot,
            "at_end": self.end_snapshot,
            "now": self.machine.snapshot(),
            "crng_ready_at": self.crng_ready_at,
            "entropy_level_reached_at": self.level_reached_at,
            "first_keygen_started_at": self.first_keygen_at,
            "first_key_written_at": self.first_key_written_at,
            "crng_ready_before_keys": self.crng_ready_before_keys(),
            "waited_seconds": self.wait.get("waited_seconds", 0.0),
            "wait": self.wait,
            "guard_seconds": self.guard_seconds(),
            "config": {"path": self.config_path, **self.config},
            "keys": self.keys,
            "removed": self.removed,
            "committed": self.committed,
            "boot_partition": self.boot,
            "published": self.published,
            "warnings": self.warnings,
        }

    def write_evidence(self) -> None:
        """The evidence, in /var/log and (when it can be written) on the boot partition; a
        copy that cannot be written is a warning, never a failure."""
        text = json.dumps(self.evidence(), indent=2, sort_keys=True) + "\n"
        paths = [self.machine.path(EVIDENCE_LOG)]
        if self.boot_writable:
            paths.append(os.path.join(self.machine.boot_dir, "entropi", "firstboot-evidence.json"))
        for path in paths:
            try:
                self.ops.write_atomic(path, text)
            except OSError as exc:
                self.warn("cannot write %s: %s" % (path, exc))

    def view(self, snapshot: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return {k: (snapshot or {}).get(k) for k in _VIEW}

    def verdict(self) -> Dict[str, Any]:
        return {
            "status": self.status,
            "action": self.action,
            "findings": self.findings,
            "done": self.done,
            "guard_seconds": self.guard_seconds(),
            "keys_source": (self.committed or {}).get("keys_source"),
            "provisional": self.provisional,
            "crng_ready_before_keys": self.crng_ready_before_keys(),
            "waited_seconds": self.wait.get("waited_seconds", 0.0),
            "at_start": self.view(self.start_snapshot),
            "at_end": self.view(self.end_snapshot),
            "fingerprints": self.fingerprints(),
            "published": self.published,
            "evidence": self.machine.path(EVIDENCE_LOG),
            "hostname": self.hostname,
            "hwrng": self.machine.hwrng()["current"],
            "warnings": self.warnings,
            "error": self.error,
        }
