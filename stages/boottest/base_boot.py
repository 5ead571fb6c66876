"""Boot an image to a verified SSH answer: the base boot test's and `invoke bench --only boot`'s unit.

One boot: a fresh card (qcow2 overlay), wait for the hwrng to register, then for sshd to
serve a host key of every expected type (ssh-keyscan, the real OpenSSH client). A named emulator fault
(faults.EMULATOR_FAULTS) starts a fresh card once and is recorded; any other failure ends the
boot at once and is reported as the image's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from stages.boottest.bootfiles import extract_boot_files
from stages.boottest.evidence import keyscan
from stages.boottest.faults import Failure
from stages.boottest.machine import Machine, card_dir, make_overlay

RETRIES = 1


def baked_keys(base: Path) -> list[str]:
    """The host keys ("type base64") a Debian-built base was made with, from its sidecar."""
    info = json.loads(Path(f"{base}.json").read_text())
    return sorted(" ".join(k.split()[:2]) for k in info["host_keys"])


def key_types(keys: list[str]) -> list[str]:
    return sorted({k.split()[0] for k in keys})


@dataclass
class Attempt:
    console: Path
    hwrng_seconds: float | None = None
    ssh_seconds: float | None = None
    keys: list[str] = field(default_factory=list)
    failure: Failure | None = None
    error: str = ""


@dataclass
class BaseBoot:
    """What booting one card showed; ``attempts`` has two entries when an emulator fault was retried."""

    attempts: list[Attempt]
    expected_types: list[str]  # host key types sshd must serve

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def ok(self) -> bool:
        return not self.last.failure and not self.last.error and bool(self.last.keys)

    @property
    def emulator_faults(self) -> list[Failure]:
        return [a.failure for a in self.attempts if a.failure and a.failure.emulator]


def boot_once(image: Path, arch: str, work: Path, label: str, *, expected_types: list[str],
              timeout: float = 400) -> Attempt:
    files = extract_boot_files(image, arch, work / "boot")
    attempt = Attempt(work / f"serial-{label}.log")
    with card_dir(work) as cards:
        disk = make_overlay(image, cards / f"card-{label}.qcow2")
        with Machine(files, disk, arch, attempt.console) as vm:
            if vm.wait_for(r"hwrng registered", timeout):
                attempt.hwrng_seconds = round(vm.elapsed(), 1)
            deadline = time.monotonic() + timeout
            while attempt.hwrng_seconds and time.monotonic() < deadline and vm.alive() and not vm.failure():
                keys = keyscan(vm.port, timeout=30)  # an emulated sshd under load is slow
                if keys and set(expected_types) <= set(key_types(keys)):
                    attempt.keys, attempt.ssh_seconds = keys, round(vm.elapsed(), 1)
                    break
                time.sleep(2)
            attempt.failure = vm.failure()
            if attempt.failure is None and not attempt.keys:
                attempt.error = ("the hwrng never registered" if attempt.hwrng_seconds is None else
                                 "sshd never served every expected key type") + \
                    ("" if vm.alive() else f" (QEMU exited: {vm.qemu_stderr()})")
    return attempt


def boot_base(image: Path, arch: str, work: Path, *, expected_types: list[str], timeout: float = 400,
              label: str = "1") -> BaseBoot:
    """Boot ``image`` on a fresh card; once more only when a named emulator fault ended the boot."""
    attempts: list[Attempt] = []
    for n in range(RETRIES + 1):
        attempts.append(boot_once(image, arch, work, f"{label}-{n + 1}", expected_types=expected_types,
                                  timeout=timeout))
        failure = attempts[-1].failure
        if failure is None or not failure.emulator:
            break
    return BaseBoot(attempts, expected_types)
