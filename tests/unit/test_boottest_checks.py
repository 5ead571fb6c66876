"""Each boot-test check can fail, and says which and why (synthetic boots, real ssh-keygen)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest

from stages.boottest.checks import evaluate
from stages.boottest.evidence import Boot


def _key(tmp: Path, name: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    return " ".join((tmp / f"{name}.pub").read_text().split()[:2])


def _fp(key: str) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=key + "\n", capture_output=True, text=True).stdout
    return out.split()[1]


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Boot]:
    a, b, base = _key(tmp_path, "a"), _key(tmp_path, "b"), _key(tmp_path, "base")
    probe = {"hwrng_current": "3f104000.rng", "hwrng_bytes": 32,
             "firstboot_unit": {"Result": "success", "ConditionResult": "yes"},
             "known_hosts": f"raspberrypi {a}\n", "root_password_field": "!", "rngd_pids": ["123"],
             "rngd_bits_sent": 4096, "rngd_fips_failures": 0, "rngd_cmdline": "/usr/sbin/rngd -r /dev/hwrng",
             "empty_key_files": [], "host_keys": [a + " root@pi"]}
    first = {"status": "ok", "crng_ready_before_keys": True, "waited_seconds": 0.0}
    a1 = Boot("A1", log="bcm2835-rng 3f104000.rng: hwrng registered\nENTROPI-FIRSTBOOT {}", firstboot=first,
              fingerprints=[_fp(a)], keys=[a], probe=probe, login_ok=True, password_offered=False)
    a2_probe = {**probe, "firstboot_unit": {"Result": "success", "ConditionResult": "no"}}
    return {"A1": a1, "A2": Boot("A2", keys=[a], probe=a2_probe), "B": Boot("B", keys=[b]),
            "C1": Boot("C1"), "C2": Boot("C2", keys=[b], probe=probe), "_base": Boot("base", keys=[base])}


def _run(boots: dict[str, Boot]) -> dict[int, str]:
    base = boots["_base"].keys
    return {c.number: c.detail for c in evaluate(boots, base_keys=base, password_expected=False) if not c.ok}


def test_a_good_run_passes_every_check(good: dict[str, Boot]) -> None:
    assert _run(good) == {}


def _broken(good: dict[str, Boot], change: str) -> dict[str, Boot]:
    boots = copy.deepcopy(good)
    a1 = boots["A1"]
    assert a1.probe is not None and a1.firstboot is not None
    if change == "no-hwrng":
        a1.log, a1.probe["hwrng_current"], a1.probe["hwrng_bytes"] = "", "", 0
    elif change == "firstboot-failed":
        a1.firstboot.update(status="failed", error="ssh-keygen failed")
        a1.probe["firstboot_unit"]["Result"] = "exit-code"
    elif change == "prebaked-key":
        base = boots["_base"].keys[0]
        a1.keys = sorted([*a1.keys, base])
    elif change == "sshd-disabled":
        a1.keys, a1.login_ok = [], False
    elif change == "password-offered":
        a1.password_offered = True
    elif change == "no-rngd":
        a1.probe["rngd_pids"], a1.probe["rngd_bits_sent"] = [], None
    elif change == "rerun":
        boots["A2"].log = "ENTROPI-FIRSTBOOT {}"
    elif change == "published-lost":  # vfat lost the rename at the power-off after boot 1
        assert boots["A2"].probe is not None
        boots["A2"].probe = {**boots["A2"].probe, "known_hosts": ""}
    elif change == "same-keys-two-cards":
        boots["B"].keys = list(a1.keys)
    elif change == "reset-left-empty":
        assert boots["C2"].probe is not None
        boots["C2"].probe = {**boots["C2"].probe, "empty_key_files": ["/etc/ssh/ssh_host_rsa_key"]}
    return boots


@pytest.mark.parametrize("change, number, why", [
    ("no-hwrng", 1, r"/dev/hwrng bytes=0"),
    ("firstboot-failed", 2, r"verdict 'failed'.*ssh-keygen failed"),
    ("prebaked-key", 3, r"pre-baked keys still served: 1"),
    ("sshd-disabled", 3, r"served 0"),
    ("sshd-disabled", 4, r"key login ok=False"),
    ("password-offered", 4, r"password offered=True \(expected False\)"),
    ("no-rngd", 5, r"rngd pids=\[\], bits sent=None"),
    ("rerun", 6, r"first-boot ran again=True"),
    ("published-lost", 6, r"published known_hosts survived the power-off=False"),
    ("same-keys-two-cards", 7, r"shared with card A: 1"),
    ("reset-left-empty", 8, r"empty files \['/etc/ssh/ssh_host_rsa_key'\]"),
])
def test_a_broken_image_fails_the_matching_check_with_its_reason(
        good: dict[str, Boot], change: str, number: int, why: str) -> None:
    failed = _run(_broken(good, change))
    assert number in failed, failed
    import re
    assert re.search(why, failed[number]), failed[number]


GROWN = {"disk_bytes": 4096 << 20, "root_partition_start_bytes": 516 << 20, "root_partition_bytes": 3580 << 20,
         "root_fs_bytes": 3580 << 20, "growroot_unit": {"Result": "success", "ConditionResult": "yes"}}


@pytest.mark.parametrize(("change", "why"), [
    ({"root_partition_bytes": 1500 << 20}, r"root partition ends at 2016 MiB"),
    ({"root_fs_bytes": 1500 << 20}, r"file system 1500 MiB"),
    ({"growroot_unit": {"Result": "exit-code"}}, r"entropi-growroot result 'exit-code'"),
    ({"disk_bytes": None, "root_size_error": "no sysfs"}, r"card 0 MiB.*no sysfs"),
])
def test_the_growth_check_fails_when_the_root_did_not_grow(change: dict[str, object], why: str) -> None:
    from stages.boottest.checks import growth_check

    assert growth_check(GROWN).ok and growth_check(GROWN).number == 9
    bad = growth_check({**GROWN, **change})
    assert not bad.ok and re.search(why, bad.detail), bad.detail


def test_boot_test_of_an_image_without_its_manifest_is_one_line_and_exit_2(tmp_path: Path, root_dir: Path) -> None:
    import sys

    image = tmp_path / "someone-elses.img"
    image.write_bytes(bytes(4096))
    res = subprocess.run([sys.executable, "-m", "invoke", "boot-test", "--image", str(image)], cwd=root_dir,
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {image}: no someone-elses.manifest.json beside the image (hint: boot-test reads what the build "
        "recorded; boot an image made by invoke build (or boot-test --recipe R))"]
