"""`invoke boot-test`: boot the built image under QEMU and prove its properties over SSH.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stages.boottest.machine import BootFiles, Failure, Machine, card_dir, extract_boot_files, make_overlay
from stages.core import progress
from stages.core.errors import UserError
from stages.core.util import remove_tree, sha256_file

PROBE_ARGS = "systemd.wants=entropi-probe.service"  # a start job for the probe; the image is unchanged
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
RETRIES = 1  # a card whose boot hit a named emulator fault (qemu.EMULATOR_FAULTS) is started over this often


@dataclass
class Boot:
    """What one boot showed."""

    name: str
    log: str = ""
    firstboot: dict[str, Any] | None = None
    fingerprints: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # "type base64" served by sshd
    probe: dict[str, Any] | None = None
    login_ok: bool | None = None
    login_error: str = ""
    password_offered: bool | None = None
    milestones: dict[str, float] = field(default_factory=dict)
    ssh_seconds: float | None = None
    error: str = ""
    failure: Failure | None = None  # the console line that ended the boot, and whose fault it was


@dataclass(frozen=True)
class Check:
    number: int
    name: str
    ok: bool
    detail: str


def keyscan(port: int, timeout: int = 10) -> list[str]:
    res = subprocess.run(["ssh-keyscan", "-T", str(timeout), "-t", "rsa,ecdsa,ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True)
    return sorted(" ".join(line.split()[1:3]) for line in res.stdout.splitlines()
                  if line and not line.startswith("#") and len(line.split()) >= 3)


def known_hosts_keys(text: str | None) -> list[str]:
    return sorted(" ".join(line.split()[1:3]) for line in (text or "").splitlines()
                  if line.strip() and not line.startswith("#") and len(line.split()) >= 3)


def fingerprint(key: str) -> str:
    res = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=key + "\n",
                         capture_output=True, text=True)
    parts = res.stdout.split()
    return parts[1] if len(parts) > 1 else ""


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

        Only faults proven to be the emulator's (qemu.EMULATOR_FAULTS) start the card over, at
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
        return report


def _check(number: int, name: str, ok: bool, good: str, bad: str) -> Check:
    return Check(number, name, bool(ok), good if ok else bad)


def evaluate(boots: dict[str, Boot], *, base_keys: list[str], password_expected: bool) -> list[Check]:
    """Turn what the boots showed into the numbered checks; each says why it failed."""
    a1, a2, b, c2 = boots["A1"], boots["A2"], boots["B"], boots["C2"]
    p = a1.probe or {}
    checks: list[Check] = []
    add: Callable[[Check], None] = checks.append
    registered = "hwrng registered" in a1.log or bool(p.get("hwrng_current"))
    add(_check(1, "hardware RNG", registered and p.get("hwrng_bytes", 0) > 0,
               f"hwrng {p.get('hwrng_current')!r} registered, /dev/hwrng gave {p.get('hwrng_bytes')} bytes",
               f"hwrng registered={registered}, /dev/hwrng bytes={p.get('hwrng_bytes')} {p.get('hwrng_error', '')}"))
    fb = a1.firstboot or {}
    unit = p.get("firstboot_unit", {})
    add(_check(2, "first-boot unit", fb.get("status") == "ok" and fb.get("crng_ready_before_keys") is True
               and unit.get("Result") == "success",
               f"status ok, crng ready before the first key, waited {fb.get('waited_seconds')}s",
               f"first-boot verdict {fb.get('status')!r} (crng_ready_before_keys={fb.get('crng_ready_before_keys')},"
               f" unit result {unit.get('Result')!r}, error {fb.get('error')!r})"))
    published = known_hosts_keys(p.get("known_hosts"))
    console = sorted(a1.fingerprints)
    served = sorted(fingerprint(k) for k in a1.keys)
    baked = sorted(set(a1.keys) & set(base_keys))
    add(_check(3, "host keys published and fresh",
               bool(a1.keys) and a1.keys == published and console == served and not baked,
               f"{len(a1.keys)} keys served = published on the boot partition = console fingerprints; none pre-baked",
               f"served {len(a1.keys)}, published match={a1.keys == published}, console match={console == served}, "
               f"pre-baked keys still served: {len(baked)}"))
    root = p.get("root_password_field") or ""
    pw_ok = (a1.password_offered is True) == password_expected
    add(_check(4, "login through the published known_hosts",
               a1.login_ok is True and pw_ok and root.startswith(("!", "*")),
               f"key login with StrictHostKeyChecking=yes worked; password logins "
               f"{'offered' if password_expected else 'refused'}; root locked",
               f"key login ok={a1.login_ok} ({a1.login_error}); password offered={a1.password_offered} "
               f"(expected {password_expected}); root password field {root[:2]!r}"))
    sent, fails = p.get("rngd_bits_sent"), p.get("rngd_fips_failures")
    on_hwrng = "/dev/hwrng" in (p.get("rngd_cmdline") or "") or p.get("hwrng_current")
    add(_check(5, "rngd feeds the kernel", bool(p.get("rngd_pids")) and bool(sent) and fails == 0 and bool(on_hwrng),
               f"rngd runs on /dev/hwrng: {sent} bits sent to the kernel, {fails} FIPS failures",
               f"rngd pids={p.get('rngd_pids')}, bits sent={sent}, FIPS failures={fails}, "
               f"cmdline={p.get('rngd_cmdline')!r}"))
    p2 = a2.probe or {}
    rerun = "ENTROPI-FIRSTBOOT " in a2.log
    still_published = known_hosts_keys(p2.get("known_hosts")) == published
    add(_check(6, "second boot", bool(a2.keys) and a2.keys == a1.keys and not rerun and still_published
               and p2.get("firstboot_unit", {}).get("ConditionResult") == "no",
               "same keys, still published on the boot partition, first-boot unit skipped",
               f"keys same={a2.keys == a1.keys} (served {len(a2.keys)}), first-boot ran again={rerun}, "
               f"published known_hosts survived the power-off={still_published}, "
               f"condition={p2.get('firstboot_unit', {}).get('ConditionResult')!r}"))
    add(_check(7, "two cards differ", bool(b.keys) and not set(b.keys) & set(a1.keys),
               "card B's host keys share nothing with card A's",
               f"card B served {len(b.keys)} keys; shared with card A: {len(set(b.keys) & set(a1.keys))}"))
    pc = c2.probe or {}
    c_fb = pc.get("firstboot_unit", {})
    complete = len(pc.get("host_keys", [])) == len(published) and len(c2.keys) == len(published)
    add(_check(8, "reset during key generation", not boots["C1"].error and bool(c2.keys) and not pc.get(
        "empty_key_files", ["?"]) and c_fb.get("Result") == "success" and complete,
               f"reset while making keys; the next boot ended with {len(c2.keys)} complete keys and sshd up",
               f"reset seen={not boots['C1'].error} {boots['C1'].error}; after: {len(c2.keys)} keys served, "
               f"empty files {pc.get('empty_key_files')}, unit result {c_fb.get('Result')!r}"))
    return checks


def growth_check(p: dict[str, Any]) -> Check:
    """9: entropi-growroot made the root partition run to the card's end and the file system fill it."""
    disk, start = p.get("disk_bytes") or 0, p.get("root_partition_start_bytes") or 0
    part, fs = p.get("root_partition_bytes") or 0, p.get("root_fs_bytes") or 0
    unit = p.get("growroot_unit", {})
    mib = 1 << 20
    ok = bool(disk) and start + part > disk - 2 * mib and fs > part - 2 * mib and unit.get("Result") == "success"
    return _check(9, "root grows to the card", ok,
                  f"root partition and file system {fs // mib} MiB, to the end of the {disk // mib} MiB card",
                  f"card {disk // mib} MiB, root partition ends at {(start + part) // mib} MiB, file system "
                  f"{fs // mib} MiB, entropi-growroot result {unit.get('Result')!r} {p.get('root_size_error', '')}")


def summary(report: dict[str, Any]) -> str:
    lines = [f"{'PASS' if c['ok'] else 'FAIL'}  {c['number']}. {c['name']}: {c['detail']}" for c in report["checks"]]
    lines += [f"RETRY card {r['card']}: boot {r['boot']} hit emulator fault {r.get('fault', '?')} ({r['console']})"
              for r in report.get("retries", [])]
    t = report["timings"].get("A1", {})
    lines.append(f"first boot: sshd answered after {t.get('ssh_seconds')}s; milestones {t.get('milestones')}")
    return "\n".join(lines)


def base_keys_for(manifest: dict[str, Any]) -> list[str]:
    """Host keys of the base an output was built from, when its ``manifest`` names a cached base."""
    try:
        base = next(i["path"] for i in manifest.get("inputs", []) if i["label"] == "base image")
        info = json.loads(Path(base + ".json").read_text())
        return [" ".join(k.split()[:2]) for k in info.get("host_keys", [])]
    except (OSError, ValueError, StopIteration, KeyError):
        return []


def check_image(image: Path) -> None:
    if not image.is_file():
        raise UserError(str(image), "no such image", hint="build it first: invoke build --recipe R")
