"""The numbered checks: what the boots showed (evidence.Boot) judged against what the image held
before it booted (prepare.Facts). Each check keeps its evidence and says why it failed.

Evidence is what the image cannot claim about itself: the kernel's log and clocks, procfs and
sysfs, file system timestamps and sizes, systemd's view of the units (all read by the boot
test's own probe), and what the OpenSSH client sees. The first-boot program's own report is
never a verdict. Card B is the examined first boot; card A loses power within a second of the
first-boot unit finishing, then boots again; card C loses power twice while keys are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.boottest.evidence import Boot, fingerprint, guard_line, known_hosts_keys, known_hosts_names
from stages.boottest.prepare import Facts

MIB = 1 << 20


@dataclass(frozen=True)
class Check:
    number: str
    name: str
    ok: bool | None  # None: not applicable to this image (or its boot was not run), see detail
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _check(number: str, name: str, ok: bool, good: str, bad: str, evidence: dict[str, Any]) -> Check:
    return Check(number, name, bool(ok), good if ok else bad, evidence)


def not_applicable(number: str, name: str, why: str) -> Check:
    return Check(number, name, None, f"not applicable: {why}")


def _probe(boot: Boot | None) -> dict[str, Any]:
    return (boot.probe or {}) if boot else {}


def kernel_line(p: dict[str, Any], text: str) -> tuple[float, str] | None:
    """The first kernel record containing ``text``: (seconds on the kernel's clock, line)."""
    for at, line in p.get("kernel", {}).get("lines", []):
        if text in line:
            return float(at), str(line)
    return None


def hwrng_running(b: Boot, facts: Facts) -> Check:
    """1b: the RNG driver entropi chose serves /dev/hwrng, and its module was loaded."""
    p = _probe(b)
    hw, mods = p.get("hwrng", {}), p.get("modules", {})
    registered = kernel_line(p, "hwrng registered") or kernel_line(p, "rng")
    wanted = [m.replace("-", "_") for m in facts.hwrng_modules]
    module = (hw.get("module") or hw.get("driver") or "").replace("-", "_")
    loaded = {m.replace("-", "_") for m in mods.get("loaded", [])}
    chosen_ok = not wanted or (module in wanted and module in loaded)
    ok = bool(hw.get("current")) and hw.get("current") != "none" and hw.get("bytes_read", 0) > 0 and chosen_ok
    ev = {"rng_current": hw.get("current"), "rng_available": hw.get("available"), "driver": hw.get("driver"),
          "module": hw.get("module"), "modules_load_d": wanted, "loaded": sorted(loaded & set(wanted)),
          "kernel_line": registered, "dev_hwrng_bytes": hw.get("bytes_read")}
    return _check("1b", "hardware RNG serves /dev/hwrng", ok,
                  f"rng_current {hw.get('current')!r} (driver {hw.get('driver')}, module {hw.get('module')}), "
                  f"/dev/hwrng gave {hw.get('bytes_read')} bytes",
                  f"rng_current {hw.get('current')!r}, driver {hw.get('driver')!r} module {hw.get('module')!r}; "
                  f"entropi loads {wanted or 'nothing'} (loaded: {sorted(loaded & set(wanted))}); /dev/hwrng "
                  f"bytes {hw.get('bytes_read')} {hw.get('error', '')}".strip(), ev)


def _crng_failure(crng: float | None, times: list[float], now: float, spread: float, result: str) -> str:
    if crng is None:
        return "no 'crng init done' line in the kernel log"
    if not times:
        return "no host key files"
    if times[0] < crng:
        return f"a host key was written at {times[0]:.3f} s, before the kernel's crng init at {crng:.3f} s"
    if times[-1] > now:
        return f"a host key's time {times[-1]:.3f} s lies after the probe ({now:.3f} s): not written in this boot"
    if spread > 1.0:
        return f"the wall clock moved {spread} s during the boot: file times cannot be placed"
    return f"first-boot unit result {result!r}"


def crng_before_keys(b: Boot, facts: Facts) -> Check:
    """2: the kernel's crng-init line precedes every host key file's last write, on one clock."""
    p = _probe(b)
    line = kernel_line(p, "crng init done")
    crng = line[0] if line else None
    clocks = p.get("clocks", {})
    now = float(clocks.get("monotonic", 0.0))
    keys = [k for k in p.get("host_keys", []) if k.get("path", "").endswith("_key") and "mtime_monotonic" in k]
    times = sorted(float(k["mtime_monotonic"]) for k in keys)
    spread = float(clocks.get("journal_offset_spread", 0.0))
    unit = p.get("firstboot_unit", {})
    started = int(unit.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    unit_ok = not facts.firstboot or unit.get("Result") == "success"
    ev = {"crng_init_at": crng, "first_key_written_at": times[0] if times else None,
          "last_key_written_at": times[-1] if times else None, "probe_at": now,
          "firstboot_started_at": started or None, "wall_clock_moved": spread, "firstboot_result": unit.get("Result"),
          "waited_for_crng": round(max(0.0, crng - started), 3) if crng is not None and started else None}
    said = guard_line(b.log)  # what the guard says of its wait, beside the kernel's own times
    ev["guard_says"] = {"waited_seconds": said.get("waited_seconds"), "at_start": said.get("at_start"),
                        "at_end": said.get("at_end")} if said else None
    ok = crng is not None and bool(times) and crng <= times[0] and times[-1] <= now and spread <= 1.0 and unit_ok
    return _check("2", "crng ready before the keys", ok,
                  f"crng init at {crng} s (kernel log), keys written {ev['first_key_written_at']}-"
                  f"{ev['last_key_written_at']} s (file times), first-boot unit started {started or '-'} s",
                  _crng_failure(crng, times, now, spread, str(unit.get("Result"))), ev)


def fresh_keys(b: Boot, facts: Facts) -> Check:
    """3: sshd serves the published keys, and none of them was in the image or its base."""
    p = _probe(b)
    published = known_hosts_keys(p.get("known_hosts"))
    console, served = sorted(b.fingerprints), sorted(fingerprint(k) for k in b.keys)
    baked = sorted(set(b.keys) & set(facts.pre_baked))
    baked_fps = [fingerprint(k) for k in baked]
    ev = {"served": served, "published": len(published), "console": len(console),
          "pre_baked_known": len(facts.pre_baked), "pre_baked_from": [f for f in ("image", facts.base_source) if f],
          "pre_baked_served": baked_fps}
    same = not facts.firstboot or (b.keys == published and console == served)
    return _check("3", "host keys published and fresh", bool(b.keys) and same and not baked,
                  f"{len(b.keys)} keys served"
                  f"{' = published on the boot partition = console fingerprints' if facts.firstboot else ''}; none "
                  f"of the {len(facts.pre_baked)} keys in the image and its base",
                  f"served {len(b.keys)}, published match={b.keys == published}, console match={console == served}, "
                  f"pre-baked keys served: {len(baked)} ({', '.join(baked_fps)})", ev)


def login(b: Boot, facts: Facts, password_expected: bool) -> Check:
    """4: the published known_hosts, unchanged, lets OpenSSH in under the card's host name; a real
    password attempt is answered as the image promises; root is locked."""
    p = _probe(b)
    names = known_hosts_names(p.get("known_hosts"))
    root = p.get("root_password_field") or ""
    pw_ok = b.password_result == ("accepted" if password_expected else "refused")
    ev = {"published_names": names, "host_key_alias": facts.hostname, "key_login": b.login_ok,
          "login_error": b.login_error, "password_attempt": b.password_result, "root_field": root[:1]}
    ok = b.login_ok is True and names == [facts.hostname] and pw_ok and root.startswith(("!", "*"))
    return _check("4", "login through the published known_hosts", ok,
                  f"key login as {facts.user} with StrictHostKeyChecking=yes, HostKeyAlias={facts.hostname}; "
                  f"password attempt {b.password_result}; root locked",
                  f"published under {names} (card {facts.hostname!r}); key login ok={b.login_ok} "
                  f"({b.login_error}); password attempt {b.password_result} (expected "
                  f"{'accepted' if password_expected else 'refused'}); root field {root[:1]!r}", ev)


def rngd_feeds(b: Boot) -> Check:
    """5: an rngd process has /dev/hwrng open, the kernel counted its reads, its statistics show bits sent."""
    r = _probe(b).get("rngd", {})
    procs = r.get("processes", [])
    inputs = sorted({path for pr in procs for path in pr.get("fds", {}).values() if path.startswith("/dev/")})
    on_hwrng = any("/dev/hwrng" in pr.get("fds", {}).values() for pr in procs)
    read = max([pr.get("rchar", 0) for pr in procs] + list(r.get("rchar_later", [])) + [0])
    sent, fails = r.get("bits_sent"), r.get("fips_failures")
    ev = {"pids": [pr.get("pid") for pr in procs], "cmdline": [pr.get("cmdline") for pr in procs],
          "devices_open": inputs, "bytes_read": read, "bits_sent": sent, "fips_failures": fails}
    ok = on_hwrng and bool(sent) and fails == 0 and read * 8 >= (sent or 0)
    why = ("no rngd process" if not procs else f"rngd reads {', '.join(inputs) or 'no device'}, not /dev/hwrng"
           if not on_hwrng else f"bits sent {sent}, FIPS failures {fails}, bytes read {read}")
    return _check("5", "rngd feeds the kernel from /dev/hwrng", ok,
                  f"rngd has /dev/hwrng open, read {read} bytes (kernel count), sent {sent} bits, {fails} FIPS "
                  "failures", why, ev)
