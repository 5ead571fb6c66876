"""The numbered checks: what the boots showed (evidence.Boot) judged, each saying why it failed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stages.boottest.evidence import Boot, fingerprint, known_hosts_keys


@dataclass(frozen=True)
class Check:
    number: int
    name: str
    ok: bool
    detail: str


def _check(number: int, name: str, ok: bool, good: str, bad: str) -> Check:
    return Check(number, name, bool(ok), good if ok else bad)


def evaluate(boots: dict[str, Boot], *, base_keys: list[str], password_expected: bool) -> list[Check]:
    """Turn what the boots showed into the numbered checks; each says why it failed."""
    return (first_boot_checks(boots["A1"], base_keys=base_keys, password_expected=password_expected)
            + later_boot_checks(boots))


def first_boot_checks(a1: Boot, *, base_keys: list[str], password_expected: bool) -> list[Check]:
    """1-5: what card A's first boot showed (hwrng, first-boot unit, keys, login, rngd)."""
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
    return checks


def later_boot_checks(boots: dict[str, Boot]) -> list[Check]:
    """6-8: the second boot of card A, card B, and card C reset while making keys."""
    a1, a2, b, c2 = boots["A1"], boots["A2"], boots["B"], boots["C2"]
    published = known_hosts_keys((a1.probe or {}).get("known_hosts"))
    checks: list[Check] = []
    add: Callable[[Check], None] = checks.append
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
