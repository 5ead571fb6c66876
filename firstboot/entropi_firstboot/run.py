"""One run's record: what it found, waited for, made and removed; its evidence and verdict."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from . import PROG, VERSION, log, seams
from .device import EVIDENCE_LOG, Machine
from .fileops import FileOps


class Run:
    def __init__(self, machine: Machine, config: Dict[str, Any], ops: FileOps,
                 config_path: str) -> None:
        self.machine = machine
        self.config = config
        self.ops = ops
        self.warnings: List[str] = []
        self.removed: List[Dict[str, str]] = []
        self.keys: List[Dict[str, Any]] = []
        self.hostname = "localhost"
        self.hostname_source = "default"
        self.crng_ready_at: Optional[float] = None
        self.level_reached_at: Optional[float] = None
        self.first_keygen_at: Optional[float] = None
        self.first_key_written_at: Optional[float] = None
        self.wait: Dict[str, Any] = {}
        self.status = "running"
        self.phase = "start"
        self.error: Optional[str] = None
        self.kept_unready_keys = False
        self.started = seams.monotonic()
        self.start_snapshot = machine.snapshot()
        self.config_path = config_path
        self.evidence_paths = [machine.path(EVIDENCE_LOG)]
        self.boot_out: Optional[str] = None
        if os.path.isdir(machine.boot_dir):
            self.boot_out = os.path.join(machine.boot_dir, "entropi")
            self.evidence_paths.append(os.path.join(self.boot_out, "firstboot-evidence.json"))
        else:
            self.warn("boot partition %s not found: nothing is published there"
                      % config["boot_dir"])

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log("WARNING: " + message)

    def fail(self, error: str) -> None:
        self.status, self.phase, self.error = "failed", "failed", error

    def crng_ready_before_keys(self) -> bool:
        if not self.keys:
            return False
        if self.kept_unready_keys:
            return False
        if self.first_keygen_at is None:
            return True  # all keys kept from an earlier run that completed its wait
        return self.crng_ready_at is not None and self.crng_ready_at <= self.first_keygen_at

    def evidence(self) -> Dict[str, Any]:
        hwrng = self.machine.hwrng()
        return {
            "program": PROG,
            "version": VERSION,
            "phase": self.phase,
            "status": self.status,
            "error": self.error,
            "hostname": self.hostname,
            "hostname_source": self.hostname_source,
            "kernel": self.machine.kernel(),
            "hwrng": hwrng,
            "clock": "CLOCK_MONOTONIC seconds (time.monotonic)",
            "started_at": round(self.started, 3),
            "at_start": self.start_snapshot,
            "now": self.machine.snapshot(),
            "crng_ready_at": self.crng_ready_at,
            "entropy_level_reached_at": self.level_reached_at,
            "first_keygen_started_at": self.first_keygen_at,
            "first_key_written_at": self.first_key_written_at,
            "crng_ready_before_keys": self.crng_ready_before_keys(),
            "waited_seconds": self.wait.get("waited_seconds", 0.0),
            "wait": self.wait,
            "config": {"path": self.config_path, **self.config},
            "keys": self.keys,
            "removed": self.removed,
            "warnings": self.warnings,
        }

    def write_evidence(self) -> None:
        text = json.dumps(self.evidence(), indent=2, sort_keys=True) + "\n"
        for path in self.evidence_paths:
            try:
                self.ops.write_atomic(path, text)
            except OSError as exc:
                self.warn("cannot write %s: %s" % (path, exc))

    def verdict(self) -> Dict[str, Any]:
        return {
            "status": self.status,
            "crng_ready_before_keys": self.crng_ready_before_keys(),
            "waited_seconds": self.wait.get("waited_seconds", 0.0),
            "fingerprints": [key["fingerprint"] for key in self.keys if "fingerprint" in key],
            "evidence": self.evidence_paths[0],
            "hostname": self.hostname,
            "hwrng": self.machine.hwrng()["current"],
            "warnings": self.warnings,
            "error": self.error,
        }
