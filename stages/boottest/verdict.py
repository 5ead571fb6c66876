"""The checks that span boots (6-9), the order of all of them, and the console summary."""

from __future__ import annotations

import re
from typing import Any

from stages.boottest.checks import (
    MIB,
    Check,
    _check,
    crng_before_keys,
    fresh_keys,
    hwrng_running,
    login,
    not_applicable,
    rngd_feeds,
)
from stages.boottest.evidence import Boot, fingerprint, guard_line, known_hosts_keys
from stages.boottest.os_checks import os_checks
from stages.boottest.prepare import Facts

POWER_CUT_LIMIT = 1.0  # seconds from the first-boot unit's last line to QEMU killed


def guard_verdict(log: str) -> dict[str, Any]:
    """The guard's own line of this boot (action, guard_seconds): shown as evidence, never a verdict."""
    said = guard_line(log)
    return {"guard_action": said.get("action"), "guard_seconds": said.get("guard_seconds"),
            "guard_quick_check": bool(said.get("quick_check"))}


def unit_span(unit: dict[str, Any]) -> float | None:
    """Seconds from systemd starting a unit's main process to its exit (systemd's timestamps)."""
    span = int(unit.get("ExecMainExitTimestampMonotonic") or 0) - int(unit.get("ExecMainStartTimestampMonotonic") or 0)
    return round(span / 1e6, 3) if span > 0 else None


def second_boot(a1: Boot, a2: Boot) -> Check:
    """6: power cut within a second of the first-boot unit finishing; the next boot serves the keys
    the first one published, and the published known_hosts is whole."""
    p2 = a2.probe or {}
    published = known_hosts_keys(p2.get("known_hosts"))
    served = sorted(fingerprint(k) for k in a2.keys)
    unit = p2.get("firstboot_unit", {})
    span = unit_span(unit)
    reference = unit_span(p2.get("reference_unit", {}))
    on_card = known_hosts_keys(a1.after_cut_known_hosts)
    ev = {"power_cut_after": a1.cut_after, "first_boot_fingerprints": sorted(a1.fingerprints), "served": served,
          "published_on_card_after_cut": len(on_card),
          "published_after": len(published), "unit_result": unit.get("Result"),
          "unit_seconds": span, "reference_unit_seconds": reference, **guard_verdict(a2.log)}
    cut_ok = a1.cut_after is not None and a1.cut_after <= POWER_CUT_LIMIT
    ok = cut_ok and bool(a2.keys) and served == sorted(a1.fingerprints) and a2.keys == published \
        and on_card == a2.keys and ev["unit_result"] == "success"
    why = (f"power cut {a1.cut_after} s after the unit finished ({a1.error})" if not cut_ok else
           f"right after the power cut the card's published known_hosts held {len(on_card)} keys, not the "
           f"{len(a2.keys)} served: the publication was not on the card yet" if on_card != a2.keys and a2.keys else
           "sshd serves keys the first boot never published: its keys were lost in the power cut"
           if served != sorted(a1.fingerprints) else
           f"the published known_hosts after the power cut holds {len(published)} keys, sshd serves {len(a2.keys)}"
           if a2.keys != published else f"first-boot unit result {ev['unit_result']!r}")
    return _check("6", "keys survive a power cut", ok,
                  f"power cut {a1.cut_after} s after the first-boot unit finished; the next boot serves the "
                  f"{len(served)} keys published before it, known_hosts whole", why, ev)


def tampered_keys_replaced(a2: Boot, a3: Boot) -> Check:
    """10: with the power off, one host key replaced and one added behind the guard's back; the next
    boot serves a fresh set, equal to the published one, none of those keys, and says what it found."""
    p3 = a3.probe or {}
    published = known_hosts_keys(p3.get("known_hosts"))
    planted = set(a3.tampered.values())
    stale = set(a3.keys) & (set(a2.keys) | planted)
    found = [line.strip() for line in re.findall(r"ENTROPI-FOUND (.*)", a3.log)]
    said = any("replaced" in f for f in found) and any("added" in f for f in found)
    ev = {"tampered": sorted(a3.tampered), "served": sorted(fingerprint(k) for k in a3.keys),
          "published": len(published), "still_served_from_before": len(stale), "console_found": found}
    ok = bool(a3.tampered) and bool(a3.keys) and a3.keys == published and not stale and said
    return _check("10", "keys changed behind the guard are replaced", ok,
                  f"after {', '.join(sorted(a3.tampered))} were changed: {len(a3.keys)} fresh keys served = published;"
                  f" the console said: {'; '.join(found)}",
                  f"tampered {sorted(a3.tampered)}; served {len(a3.keys)}, published {len(published)}, keys from "
                  f"before or planted still served: {len(stale)}; console said: {found or 'nothing'}", ev)


def cards_differ(a2: Boot, b: Boot) -> Check:
    shared = set(a2.keys) & set(b.keys)
    return _check("7", "two cards differ", bool(a2.keys) and bool(b.keys) and not shared,
                  "card B's host keys share nothing with card A's",
                  f"card A served {len(a2.keys)}, card B {len(b.keys)}; shared: {len(shared)}",
                  {"card_a": sorted(fingerprint(k) for k in a2.keys), "card_b": sorted(fingerprint(k) for k in b.keys)})


def reset_during_keys(boots: dict[str, Boot], key_count: int) -> Check:
    """8: power cut inside ssh-keygen (C1) and after the keys' renames, before the run is committed
    (C2); the third boot ends with whole pairs, published = served, and the unit succeeded."""
    c1, c2, c3 = boots["C1"], boots["C2"], boots["C3"]
    p = c3.probe or {}
    privs = [k for k in p.get("host_keys", []) if k.get("path", "").endswith("_key")]
    bad = [k["path"] for k in privs if not k.get("pair_ok") or not k.get("bytes")]
    published = known_hosts_keys(p.get("known_hosts"))
    result = p.get("firstboot_unit", {}).get("Result")
    ev = {"cut_points": [c1.cut_line, c2.cut_line], "pairs": len(privs), "bad_pairs": bad, "served": len(c3.keys),
          "published": len(published), "unit_result": result}
    ok = bool(c1.cut_line and c2.cut_line) and not bad and len(privs) >= key_count and c3.keys == published \
        and len(c3.keys) >= key_count and result == "success"
    return _check("8", "power cuts while keys are made", ok,
                  f"cut at {c1.cut_line!r} and at {c2.cut_line!r}; then {len(privs)} whole pairs, sshd serves the "
                  f"{len(c3.keys)} published keys",
                  f"cuts seen: {[c1.cut_line, c2.cut_line]} ({c1.error or c2.error}); after: pairs broken {bad}, "
                  f"{len(privs)} private keys, served {len(c3.keys)}, published {len(published)}, unit {result!r}", ev)


def root_grows(b: Boot, facts: Facts) -> Check:
    """9: partition 2's end and the ext4 size moved from their values in the image to the card's end."""
    r = (b.probe or {}).get("root", {})
    disk, start = int(r.get("disk_bytes") or 0), int(r.get("partition_start_bytes") or 0)
    end, fs = start + int(r.get("partition_bytes") or 0), int(r.get("fs_bytes") or 0)
    ev = {"card_bytes": disk, "end_before": facts.root_end_bytes, "end_after": end,
          "fs_before": facts.root_fs_bytes, "fs_after": fs}
    ok = disk > facts.root_end_bytes and end > facts.root_end_bytes and end > disk - 2 * MIB \
        and fs > facts.root_fs_bytes and fs > end - start - 2 * MIB
    return _check("9", "root grows to the card", ok,
                  f"partition end {facts.root_end_bytes // MIB} -> {end // MIB} MiB, file system "
                  f"{facts.root_fs_bytes // MIB} -> {fs // MIB} MiB, card {disk // MIB} MiB",
                  f"card {disk // MIB} MiB; partition end {facts.root_end_bytes // MIB} -> {end // MIB} MiB, file "
                  f"system {facts.root_fs_bytes // MIB} -> {fs // MIB} MiB {r.get('error', '')}".strip(), ev)


def evaluate(boots: dict[str, Boot], facts: Facts, *, password_expected: bool, grows: bool,
             key_count: int) -> list[Check]:
    """Every check that the boots run can decide; the others say why they are not applicable."""
    checks: list[Check] = []
    b = boots.get("B")
    if b is not None:
        checks += [hwrng_running(b, facts), crng_before_keys(b, facts), fresh_keys(b, facts),
                   login(b, facts, password_expected), rngd_feeds(b)]
    else:
        checks += [not_applicable(n, name, "card B was not booted") for n, name in
                   (("1b", "hardware RNG serves /dev/hwrng"), ("2", "crng ready before the keys"),
                    ("3", "host keys published and fresh"), ("4", "login through the published known_hosts"),
                    ("5", "rngd feeds the kernel from /dev/hwrng"))]
    if "A2" in boots and facts.firstboot:
        checks.append(second_boot(boots["A1"], boots["A2"]))
    else:
        checks.append(not_applicable("6", "keys survive a power cut", "no entropi first-boot unit or no card A"))
    checks.append(cards_differ(boots["A2"], b) if "A2" in boots and b else
                  not_applicable("7", "two cards differ", "cards A and B were not both booted"))
    checks.append(reset_during_keys(boots, key_count) if "C3" in boots and facts.firstboot else
                  not_applicable("8", "power cuts while keys are made", "no entropi first-boot unit or no card C"))
    checks.append(root_grows(b, facts) if b and grows else
                  not_applicable("9", "root grows to the card", "the image does not grow its root at first boot"
                                 if b else "card B was not booted"))
    checks.append(tampered_keys_replaced(boots["A2"], boots["A3"]) if "A3" in boots and facts.firstboot else
                  not_applicable("10", "keys changed behind the guard are replaced",
                                 "no entropi first-boot unit or no card A"))
    return checks + os_checks(b, facts)


def summary(report: dict[str, Any]) -> str:
    word = {True: "PASS", False: "FAIL", None: "N/A "}
    lines = [f"{word[c['ok']]}  {c['number']}. {c['name']}: {c['detail']}" for c in report["checks"]]
    lines += [f"RETRY card {r['card']}: boot {r['boot']} hit emulator fault {r.get('fault', '?')} ({r['console']})"
              for r in report.get("retries", [])]
    t = report["timings"].get("B", {})
    lines.append(f"first boot (card B): sshd answered after {t.get('ssh_seconds')}s; milestones {t.get('milestones')}")
    return "\n".join(lines)
