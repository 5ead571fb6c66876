"""Each boot-test check can fail, and says which and why (synthetic probe reports, real ssh-keygen).

The boot-level negative controls (tests/boot/test_negative_controls.py) break real images; these
are the fast companions: one changed fact per case, the matching check fails with its reason.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stages.boottest.evidence import Boot
from stages.boottest.prepare import Facts
from stages.boottest.verdict import evaluate


def _key(tmp: Path, name: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    return " ".join((tmp / f"{name}.pub").read_text().split()[:2])


def _fp(key: str) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=key + "\n", capture_output=True, text=True).stdout
    return out.split()[1]


def _probe(key: str) -> dict[str, Any]:
    return {
        "kernel": {"lines": [[23.1, "bcm2835-rng 3f104000.rng: hwrng registered"], [28.2, "random: crng init done"]]},
        "clocks": {"realtime": 1000.0, "monotonic": 90.0, "journal_offset_spread": 0.0},
        "hwrng": {"current": "3f104000.rng", "available": ["3f104000.rng"], "driver": "bcm2835-rng",
                  "module": "bcm2835_rng", "bytes_read": 32},
        "modules": {"loaded": ["bcm2835_rng"]},
        "firstboot_unit": {"Result": "success", "ExecMainStartTimestampMonotonic": "44500000"},
        "host_keys": [{"path": "/etc/ssh/ssh_host_ed25519_key", "bytes": 411, "mtime_monotonic": 44.8,
                       "pair_ok": True}, {"path": "/etc/ssh/ssh_host_ed25519_key.pub", "bytes": 96}],
        "known_hosts": f"pi-07 {key}\n", "root_password_field": "!",
        "rngd": {"processes": [{"pid": 300, "cmdline": "/usr/sbin/rngd -r /dev/hwrng",
                                "fds": {"3": "/dev/hwrng", "4": "/dev/random"}, "rchar": 4096}],
                 "bits_sent": 8192, "fips_failures": 0},
        "root": {"disk_bytes": 4096 << 20, "partition_start_bytes": 516 << 20, "partition_bytes": 3580 << 20,
                 "fs_bytes": 3580 << 20},
    }


@pytest.fixture
def good(tmp_path: Path) -> tuple[dict[str, Boot], Facts]:
    a, b, base = _key(tmp_path, "a"), _key(tmp_path, "b"), _key(tmp_path, "base")
    fresh, planted = _key(tmp_path, "fresh"), _key(tmp_path, "planted")
    facts = Facts(base_keys=[base], base_source="base.img", hostname="pi-07", user="ada", password="pw",
                  firstboot=True, hwrng_modules=["bcm2835-rng"], root_end_bytes=1200 << 20,
                  root_fs_bytes=680 << 20)
    boots = {
        "B": Boot("B", fingerprints=[_fp(b)], keys=[b], probe=_probe(b), login_ok=True, password_result="refused"),
        "A1": Boot("A1", fingerprints=[_fp(a)], cut_line="ENTROPI-FIRSTBOOT {", cut_after=0.12,
                   after_cut_known_hosts=f"pi-07 {a}\n"),
        "A2": Boot("A2", keys=[a], probe=_probe(a)),
        "A3": Boot("A3", keys=[fresh], probe=_probe(fresh), tampered={"/etc/ssh/ssh_host_ed25519_key": planted},
                   log="[ 50.1] entropi-firstboot[9]: ENTROPI-FOUND ssh_host_ed25519_key: replaced (committed x)\n"
                       "[ 50.1] entropi-firstboot[9]: ENTROPI-FOUND ssh_host_dsa_key: added (not committed)\n"),
        "C1": Boot("C1", cut_line="making the ed25519 host key"), "C2": Boot("C2", cut_line="ENTROPI-FINGERPRINT 1 "),
        "C3": Boot("C3", keys=[a], probe=_probe(a)),
    }
    return boots, facts


def _failed(boots: dict[str, Boot], facts: Facts) -> dict[str, str]:
    return {c.number: c.detail for c in evaluate(boots, facts, password_expected=False, grows=True, key_count=1)
            if c.ok is False}


def test_a_good_run_passes_every_check(good: tuple[dict[str, Boot], Facts]) -> None:
    checks = evaluate(*good, password_expected=False, grows=True, key_count=1)
    assert [c.number for c in checks] == ["1b", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    assert [c.number for c in checks if not c.ok] == ["11", "12"]  # a bookworm-shaped image: neither applies
    assert [c.ok for c in checks[-2:]] == [None, None]
    two = next(c for c in checks if c.number == "2")
    assert two.evidence["crng_init_at"] == 28.2 and two.evidence["waited_for_crng"] == 0.0


def _break(boots: dict[str, Boot], facts: Facts, change: str) -> None:
    p = boots["B"].probe
    assert p is not None
    if change == "hwrng-other-driver":
        p["hwrng"].update(current="tpm-rng-0", driver="tpm", module="tpm_rng")
    elif change == "key-before-crng":
        p["host_keys"][0]["mtime_monotonic"] = 12.5
    elif change == "key-from-elsewhere":
        p["host_keys"][0]["mtime_monotonic"] = 5000.0
    elif change == "no-crng-line":
        p["kernel"]["lines"] = p["kernel"]["lines"][:1]
    elif change == "pre-baked":
        facts.base_keys.append(boots["B"].keys[0])
    elif change == "published-wrong-name":
        p["known_hosts"] = p["known_hosts"].replace("pi-07", "raspberrypi")
    elif change == "password-accepted":
        boots["B"].password_result = "accepted"
    elif change == "rngd-urandom":
        p["rngd"]["processes"][0]["fds"]["3"] = "/dev/urandom"
    elif change == "late-power-cut":
        boots["A1"].cut_after = 4.0
    elif change == "keys-lost":
        boots["A1"].fingerprints = ["SHA256:lost"]
    elif change == "publication-not-durable":  # republished later: only the card right after the cut shows it
        boots["A1"].after_cut_known_hosts = ""
    elif change == "same-keys":  # card A is card B's twin
        boots["A2"] = copy.deepcopy(boots["B"])
        boots["A1"].fingerprints = list(boots["B"].fingerprints)
        boots["A1"].after_cut_known_hosts = boots["B"].probe["known_hosts"] if boots["B"].probe else ""
    elif change == "broken-pair":
        c3 = boots["C3"].probe
        assert c3 is not None
        c3["host_keys"] = copy.deepcopy(c3["host_keys"])
        c3["host_keys"][0]["pair_ok"] = False
    elif change == "tampered-key-served":
        tampered = boots["A3"]
        tampered.keys = sorted([*tampered.keys, *tampered.tampered.values()])
    elif change == "tamper-unnoticed":
        boots["A3"].log = ""
    elif change == "not-grown":
        p["root"]["partition_bytes"] = (1200 - 516) << 20


@pytest.mark.parametrize("change, number, why", [
    ("hwrng-other-driver", "1b", r"module 'tpm_rng'; entropi loads \['bcm2835_rng'\]"),
    ("key-before-crng", "2", r"written at 12.500 s, before the kernel's crng init at 28.200 s"),
    ("key-from-elsewhere", "2", r"after the probe .*not written in this boot"),
    ("no-crng-line", "2", r"no 'crng init done' line"),
    ("pre-baked", "3", r"pre-baked keys served: 1"),
    ("published-wrong-name", "4", r"published under \['raspberrypi'\] \(card 'pi-07'\)"),
    ("password-accepted", "4", r"password attempt accepted \(expected refused\)"),
    ("rngd-urandom", "5", r"rngd reads /dev/random, /dev/urandom, not /dev/hwrng"),
    ("late-power-cut", "6", r"power cut 4.0 s after"),
    ("keys-lost", "6", r"keys the first boot never published"),
    ("publication-not-durable", "6", r"right after the power cut the card's published known_hosts held 0 keys"),
    ("same-keys", "7", r"shared: 1"),
    ("broken-pair", "8", r"pairs broken \['/etc/ssh/ssh_host_ed25519_key'\]"),
    ("not-grown", "9", r"partition end 1200 -> 1200 MiB"),
    ("tampered-key-served", "10", r"keys from before or planted still served: 1"),
    ("tamper-unnoticed", "10", r"console said: nothing"),
])
def test_a_broken_fact_fails_exactly_the_matching_check(
        good: tuple[dict[str, Boot], Facts], change: str, number: str, why: str) -> None:
    boots, facts = copy.deepcopy(good)
    _break(boots, facts, change)
    failed = _failed(boots, facts)
    assert list(failed) == [number], failed
    assert re.search(why, failed[number]), failed[number]


def test_checks_without_their_boots_are_not_applicable_never_passed(good: tuple[dict[str, Boot], Facts]) -> None:
    boots, facts = good
    only_b = {"B": boots["B"]}
    checks = {c.number: c for c in evaluate(only_b, facts, password_expected=False, grows=False, key_count=1)}
    for number in ("6", "7", "8", "9", "10"):
        assert checks[number].ok is None and checks[number].detail.startswith("not applicable"), number
