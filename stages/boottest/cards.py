"""The boot test's cards: boot the built image under QEMU and collect what each boot shows.

Cards are qcow2 overlays over the output (which stays byte-identical). Card A boots twice
(first boot, then a second boot), card B once (two cards, different keys), card C is
reset while the first-boot unit makes keys and then booted again. The guest's verdicts
are machine-readable: the first-boot unit's `ENTROPI-FIRSTBOOT {json}` console line and
the probe's JSON (`systemd.wants=entropi-probe.service` on QEMU's command line).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from stages.boottest.bootfiles import BootFiles, extract_boot_files
from stages.boottest.checks import Check, evaluate, growth_check
from stages.boottest.evidence import Boot, keyscan, known_hosts_keys
from stages.boottest.machine import Machine, card_dir, make_overlay
from stages.boottest.markdown import render as render_markdown
from stages.core import progress
from stages.core.files import remove_tree, sha256_file

PROBE_ARGS = "systemd.wants=entropi-probe.service"  # a start job for the probe; the image is unchanged
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
RETRIES = 1  # a card whose boot hit a named emulator fault (faults.EMULATOR_FAULTS) is started over this often


class BootTest:
    def __init__(self, image: Path, arch: str, *, key: Path | None, user: str, out_dir: Path,
                 timeout: int = 600, base_keys: list[str] | None = None, reset_at_key: str = "rsa",
                 growroot: bool = False, key_count: int = 0) -> None:
        self.key_count = key_count  # host key types the image makes (rescan until sshd serves them all)
        self.reset_at_key = reset_at_key  # the key type being made when card C loses power
        self.growroot = growroot  # the build added entropi-growroot: check the root fills the card
        self.image, self.arch, self.key, self.user = image, arch, key, user
        self.out_dir, self.timeout = out_dir, timeout
        self.base_keys = base_keys or []
        self.name = image.name.removesuffix(".img")
        self.work = out_dir / f".boot-{self.name}"

    # -- one boot ---------------------------------------------------------------------
    def log_path(self, label: str) -> Path:
        return self.out_dir / (f"{self.name}.boot.log" if label == "A1" else f"{self.name}.boot-{label}.log")

    def boot(self, files: BootFiles, disk: Path, label: str, *, kill_at: str | None = None) -> Boot:
        log = self.log_path(label)
        result = Boot(label)
        with Machine(files, disk, self.arch, log) as vm, progress.step(f"boot {label}"):
            if kill_at:
                if not vm.wait_for(kill_at, self.timeout):
                    result.error = f"never saw {kill_at!r} on the console"
                result.log = vm.text()
                result.failure = vm.failure()
                return result
            self._until_ssh(vm, result)
            if result.keys:
                self._login_and_probe(vm, result)
                published = known_hosts_keys((result.probe or {}).get("known_hosts"))
                for _ in range(3):  # an emulated sshd can be slow to answer every key type at once
                    if len(result.keys) >= max(len(published), self.key_count):
                        break
                    result.keys = sorted(set(result.keys) | set(keyscan(vm.port, timeout=30)))
            m = re.search(r"ENTROPI-FIRSTBOOT (\{.*\})", vm.text())
            if m:
                try:
                    result.firstboot = json.loads(m.group(1))
                except ValueError:
                    result.firstboot = {"unparsable": m.group(1)[:200]}
            result.fingerprints = re.findall(r"ENTROPI-FINGERPRINT \d+ (SHA256:\S+)", vm.text())
            vm.poll_milestones()
            result.milestones = dict(vm.milestones)
            result.log = vm.text()
            result.failure = vm.failure()
        return result

    def _until_ssh(self, vm: Machine, result: Boot) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and vm.alive() and not vm.failure():
            vm.poll_milestones()
            keys = keyscan(vm.port)
            if keys:
                result.keys = keys
                result.ssh_seconds = round(vm.elapsed(), 1)
                return
            time.sleep(3)
        failure = vm.failure()
        result.error = "sshd never answered" + (f" (boot failed: {failure})" if failure else
                                                "" if vm.alive() else f" (QEMU exited: {vm.qemu_stderr()})")

    def _ssh(self, vm: Machine, known_hosts: Path | None, *cmd: str) -> subprocess.CompletedProcess[str]:
        checking = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts \
            else ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv = ["ssh", *SSH_OPTS, *checking, "-o", "IdentitiesOnly=yes", "-i", str(self.key), "-p", str(vm.port),
                f"{self.user}@127.0.0.1", *cmd]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def _login_and_probe(self, vm: Machine, result: Boot) -> None:
        # The probe's report arrives on the console and in /run (read over SSH below).
        deadline = time.monotonic() + self.timeout
        probe_line = None
        while time.monotonic() < deadline and vm.alive() and probe_line is None and not vm.failure():
            probe_line = re.search(r"ENTROPI-PROBE (\{.*\})", vm.text())
            if probe_line is None:
                time.sleep(3)
        published = None
        if probe_line:
            try:
                probe: dict[str, Any] = json.loads(probe_line.group(1))
                result.probe = probe
                published = probe.get("known_hosts")
            except ValueError:
                result.probe = None
        if self.key is None:
            return
        trust = self.work / f"known_hosts-{result.name}"
        # The user's trust path: the known_hosts file published on the card's boot partition.
        lines = [f"[127.0.0.1]:{vm.port} {k}" for k in known_hosts_keys(published)]
        trust.write_text("\n".join(lines) + "\n")
        res = self._ssh(vm, trust if lines else None, "cat", "/run/entropi-probe.json")
        result.login_ok = res.returncode == 0 and bool(lines)
        result.login_error = res.stderr.strip()[-300:]
        if res.returncode == 0 and result.probe is None:
            try:
                result.probe = json.loads(res.stdout)
            except ValueError:
                pass
        pw = subprocess.run(["ssh", "-v", *SSH_OPTS, "-o", "StrictHostKeyChecking=no", "-o",
                             "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no", "-p", str(vm.port),
                             f"{self.user}@127.0.0.1", "true"], capture_output=True, text=True, timeout=60)
        methods = re.findall(r"Authentications that can continue: (\S+)", pw.stderr)
        result.password_offered = any("password" in m or "keyboard-interactive" in m for m in methods)

    # -- the whole test ---------------------------------------------------------------
    def card(self, files: BootFiles, card: str, plan: list[tuple[str, str | None]],
             retries: list[dict[str, str]], cards: Path | None = None) -> dict[str, Boot]:
        """Boot one card through ``plan``; a fresh card again when a named emulator fault ended a boot.

        Only faults proven to be the emulator's (faults.EMULATOR_FAULTS) start the card over, at
        most RETRIES times, each recorded in the report. Any other failure (a panic, a device
        that never appeared, no sshd) is the image's and is reported at once.
        """
        done: dict[str, Boot] = {}
        for attempt in range(RETRIES + 1):
            disk = (cards or self.work) / f"card-{card}.qcow2"
            disk.unlink(missing_ok=True)
            make_overlay(self.image, disk)
            done = {}
            for label, kill_at in plan:
                done[label] = boot = self.boot(files, disk, label, kill_at=kill_at)
                if boot.failure:
                    break
            failed = next((b for b in done.values() if b.failure), None)
            if failed is None or failed.failure is None or not failed.failure.emulator or attempt == RETRIES:
                break
            fault = failed.failure
            retries.append({"card": card, "boot": failed.name, "fault": fault.name, "console": fault.line})
            kept = self.log_path(failed.name).rename(self.log_path(f"{failed.name}-failed-{attempt + 1}"))
            progress.warn(f"card {card}: emulator fault {fault.name} in boot {failed.name} "
                          f"({fault.line}); starting the card over (console kept in {kept.name})")
        return {label: done.get(label, Boot(label, error="not booted: an earlier boot of this card failed"))
                for label, _ in plan}

    def run(self, *, password_expected: bool) -> dict[str, Any]:
        remove_tree(self.work)
        retries: list[dict[str, str]] = []
        self.work.mkdir(parents=True)
        try:
            before = sha256_file(self.image)
            files = extract_boot_files(self.image, self.arch, self.work / "boot")
            files = replace(files, cmdline=f"{files.cmdline} {PROBE_ARGS}")
            kill_at = rf"making the {self.reset_at_key} host key"
            plans: dict[str, list[tuple[str, str | None]]] = {
                "A": [("A1", None), ("A2", None)], "B": [("B", None)], "C": [("C1", kill_at), ("C2", None)]}
            boots: dict[str, Boot] = {}
            with card_dir(self.work) as cards:
                for card, plan in plans.items():
                    boots.update(self.card(files, card, plan, retries, cards))
            checks = evaluate(boots, base_keys=self.base_keys, password_expected=password_expected)
            if self.growroot:
                checks.append(growth_check(boots["A1"].probe or {}))
            checks.append(Check(0, "output unchanged", sha256_file(self.image) == before,
                                "the image stayed byte-identical (cards are qcow2 overlays)"))
        finally:
            remove_tree(self.work)
        a1 = boots["A1"]
        report = {
            "image": str(self.image), "arch": self.arch, "passed": all(c.ok for c in checks),
            "checks": [c.__dict__ for c in checks], "retries": retries,
            "timings": {b.name: {"milestones": b.milestones, "ssh_seconds": b.ssh_seconds} for b in boots.values()},
            "firstboot": a1.firstboot, "probe": a1.probe,
        }
        path = self.out_dir / f"{self.name}.boot-report.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(render_markdown(report))  # NAME.boot-report.md, the job summary
        return report


