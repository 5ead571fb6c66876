"""The boot test's cards: boot the image under QEMU and collect what each boot shows.

Cards are qcow2 overlays of one prepared overlay (prepare.py: the probe and a known password
written, the image's facts read) over the image, which stays byte-identical; each card is
strictly larger than the image, so a first-boot grow has room. Card B is the examined first
boot; card A loses power within a second of the first-boot unit's last line and boots again;
before its third boot one host key is replaced and one added behind the guard's back;
card C loses power inside ssh-keygen, then after the keys' renames (before the run is
committed), then boots a third time.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from stages.boottest.bootfiles import BootFiles, card_boot_file, card_cmdline, card_mbr
from stages.boottest.evidence import Boot, keyscan, known_hosts_keys
from stages.boottest.login import login_and_password
from stages.boottest.machine import Machine, overlay
from stages.boottest.prepare import Facts
from stages.boottest.tamper import tamper
from stages.core import progress

PROBE_ARGS = "systemd.wants=entropi-probe.service"  # a start job for the probe; the image is unchanged
UNIT_DONE = r"ENTROPI-FIRSTBOOT \{"  # the first-boot program's last line, after its last write
COMMIT_WINDOW = r"host keys in place; publishing, then committing"  # after every key's rename, before the commit
RETRIES = 1  # a card whose boot hit a named emulator fault (faults.EMULATOR_FAULTS) is started over this often
Plan = list[tuple[str, "str | None"]]


def plans(key_type: str, tamper: bool = True) -> dict[str, Plan]:
    """The boots of each card; ``tamper``: card A boots a third time after its keys were changed."""
    return {"B": [("B", None)], "A": [("A1", UNIT_DONE), ("A2", None), *([("A3", None)] if tamper else [])],
            "C": [("C1", rf"making the {key_type} host key"), ("C2", COMMIT_WINDOW), ("C3", None)]}


class Cards:
    """Boots cards of one prepared disk and gathers what each boot shows."""

    def __init__(self, files: BootFiles, arch: str, facts: Facts, *, key: Path | None, out_dir: Path, name: str,
                 work: Path, timeout: int, key_count: int) -> None:
        self.files, self.arch, self.facts, self.key = files, arch, facts, key
        self.out_dir, self.name, self.work, self.timeout, self.key_count = out_dir, name, work, timeout, key_count

    def log_path(self, label: str) -> Path:
        return self.out_dir / (f"{self.name}.boot.log" if label == "B" else f"{self.name}.boot-{label}.log")

    def boot(self, disk: Path, label: str, *, cut_at: str | None = None, again: bool = False) -> Boot:
        result = Boot(label)
        files = self.files
        if again:  # the firmware reads cmdline.txt at every power-on; a first boot may have changed it
            files = replace(files, cmdline=f"{card_cmdline(disk, files.boot_part, self.arch)} {PROBE_ARGS}")
        with Machine(files, disk, self.arch, self.log_path(label)) as vm, progress.step(f"boot {label}"):
            if cut_at:
                m = vm.wait_for(cut_at, self.timeout, poll=0.05)
                if m:
                    vm.kill()  # the power cut
                    result.cut_after = round(time.monotonic() - vm.unseen_at, 3)
                    result.cut_line = m.group(0)
                    # what the card holds the moment the power is gone, before anything boots again
                    published = card_boot_file(disk, files.boot_part, "entropi/known_hosts")
                    result.after_cut_known_hosts = published.decode(errors="replace") if published else ""
                else:
                    result.error = f"never saw {cut_at!r} on the console"
            else:
                self._until_ssh(vm, result)
                if result.keys:
                    self._examine(vm, result)
            # each run of the guard says them (a boot may run it twice: the test of the entropy wait)
            result.fingerprints = list(dict.fromkeys(re.findall(r"ENTROPI-FINGERPRINT \d+ (SHA256:\S+)", vm.text())))
            vm.poll_milestones()
            result.milestones, result.log, result.failure = dict(vm.milestones), vm.text(), vm.failure()
        if self.facts.resize and not cut_at:  # what the initramfs resize left on the card, read on the host
            cmdline = card_boot_file(disk, files.boot_part, "cmdline.txt")
            result.card_after = {"disk_id": card_mbr(disk).disk_id,
                                 "cmdline_txt": cmdline.decode(errors="replace").strip() if cmdline else None}
        return result

    def _until_ssh(self, vm: Machine, result: Boot) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and vm.alive() and not vm.failure():
            vm.poll_milestones()
            keys = keyscan(vm.port)
            if keys:
                result.keys, result.ssh_seconds = keys, round(vm.elapsed(), 1)
                return
            time.sleep(3)
        failure = vm.failure()
        result.error = "sshd never answered" + (f" (boot failed: {failure})" if failure else
                                                "" if vm.alive() else f" (QEMU exited: {vm.qemu_stderr()})")

    def _examine(self, vm: Machine, result: Boot) -> None:
        """The probe's report from the console; then the login and password attempt; all key types."""
        m = vm.wait_for(r"ENTROPI-PROBE (\{.*\})\r?\n|(Failed to start .*entropi-probe|Traceback \(most recent)",
                        self.timeout, poll=2)
        if m and m.group(2):
            result.error = f"the boot test's probe failed on the card: {m.group(2)} (see the console log)"
        elif m:
            try:
                result.probe = json.loads(m.group(1))
            except ValueError:
                result.error = "the probe's report is not JSON"
        published = (result.probe or {}).get("known_hosts")
        if self.key is not None and published:
            trust = self.work / f"known_hosts-{result.name}"
            trust.write_text(published)  # as the card published it, unchanged
            login_and_password(vm.port, trust, self.key, self.facts, result)
            if result.login_ok:
                result.milestones["login"] = round(vm.elapsed(), 1)
        want = max(len(known_hosts_keys(published)), self.key_count)
        for _ in range(3):  # an emulated sshd can be slow to answer every key type at once
            if len(result.keys) >= want:
                break
            result.keys = sorted(set(result.keys) | set(keyscan(vm.port, timeout=30)))

    def card(self, prepared: Path, cards: Path, card: str, plan: Plan,
             retries: list[dict[str, str]]) -> dict[str, Boot]:
        """Boot one card through ``plan``; a fresh card again when a named emulator fault ended a boot.

        Only faults proven to be the emulator's (faults.EMULATOR_FAULTS) start the card over, at
        most RETRIES times, each recorded in the report. Any other failure (a panic, a device
        that never appeared, no sshd) is the image's and is reported at once.
        """
        done: dict[str, Boot] = {}
        for attempt in range(RETRIES + 1):
            disk = cards / f"card-{card}.qcow2"
            disk.unlink(missing_ok=True)
            overlay(prepared, "qcow2", disk, self.card_bytes)
            done = {}
            for n, (label, cut_at) in enumerate(plan):
                tampered = tamper(disk, "/etc/ssh/ssh_host_ed25519_key") if label == "A3" else {}
                done[label] = boot = self.boot(disk, label, cut_at=cut_at, again=n > 0)
                boot.tampered = tampered
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

    card_bytes: int = 0


def timeline(b: Boot) -> dict[str, float]:
    """Milestones in seconds since power on: console lines seen by the host, and the kernel's own
    times (hwrng, crng, first key written) placed after the moment the kernel started."""
    points = dict(b.milestones)
    p, start = b.probe or {}, b.milestones.get("kernel")
    if start is not None:
        for name, text in (("hwrng", "hwrng registered"), ("crng ready", "crng init done")):
            at = next((float(t) for t, line in p.get("kernel", {}).get("lines", []) if text in line), None)
            if at is not None:
                points[name] = round(start + at, 1)
        now = float(p.get("clocks", {}).get("monotonic", 0.0))
        keys = [float(k["mtime_monotonic"]) for k in p.get("host_keys", []) if 0 <= k.get("mtime_monotonic", -1) <= now]
        if keys:
            points["keys"] = round(start + min(keys), 1)
    if b.ssh_seconds is not None:
        points["sshd"] = b.ssh_seconds
    return points


def timings(boots: dict[str, Boot]) -> dict[str, Any]:
    return {b.name: {"milestones": timeline(b), "ssh_seconds": b.ssh_seconds, "cut_line": b.cut_line,
                     "cut_after": b.cut_after} for b in boots.values()}
