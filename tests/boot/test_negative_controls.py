"""Negative controls: each boot-test check fails on a copy of a built image that lacks its property.

Sabotages are grouped so that a few boots cover them all; each group asserts that exactly the
checks of its sabotages fail, each with a message naming the cause, and that every other check
that ran still passes. The same image unbroken passes every check (tests/boot/test_boot_test.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stages.boottest.run import boot_test_for, read_manifest
from tests.conftest import need_tools, timed
from tests.support import sabotage as s

pytestmark = pytest.mark.boot

def groups(base: Path) -> dict[str, tuple[list[s.Sabotage], tuple[str, ...], dict[str, str]]]:
    """name -> (sabotages, cards booted, {check: what its failure must say})."""
    return {
        # card B: what the first boot shows
        "config-hwrng-name-growth": (
            [s.rng_off_in_config, s.hwrng_blacklisted, s.wrong_hostname, s.growroot_done], ("B",), {
                "1a": r"hardware RNG off on \w+: config\.txt:\d+",
                "1b": r"entropi loads \['bcm2835_rng'\] \(loaded: \[\]\)",
                "4": r"published under \['not-the-recipes-name'\] \(card 'raspberrypi'\)",
                "5": r"not /dev/hwrng|no rngd process",
                "9": r"partition end (\d+) -> \1 MiB",
            }),
        # cards B and A: keys that were there before the first boot, rngd's input, password logins, and a
        # power cut right after the first-boot unit (which then only published the planted set again)
        "prebaked-rngd-password-fsync": (
            [s.planted_keys(base), s.rngd_on_urandom, s.password_logins_on, s.no_fsync], ("B", "A"), {
                "2": r"before the kernel's crng init|not written in this boot|no 'crng init done' line",
                "3": r"pre-baked keys served: [1-9]",
                "4": r"password attempt accepted \(expected refused\)",
                "5": r"rngd reads .*/dev/urandom.*, not /dev/hwrng",
                "6": r"publication was not on the card yet|keys the first boot never published",
                "7": r"shared: [1-9]",
            }),
        # card C: power cuts while a key maker that is not crash-safe makes keys
        "naive-key-maker": ([s.naive_key_maker], ("C",), {"8": r"pairs broken \['/etc/ssh/ssh_host_rsa_key'\]"}),
    }


GROUPS = ["config-hwrng-name-growth", "prebaked-rngd-password-fsync", "naive-key-maker"]


@pytest.mark.parametrize("group", GROUPS)
def test_a_sabotaged_copy_fails_exactly_the_matching_checks(group: str, built_arm64: Path, base_arm64: Path,
                                                            user_key: Path, tmp_path: Path) -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen")
    sabotages, cards, expected = groups(base_arm64)[group]
    image = s.sabotaged_copy(built_arm64, tmp_path / "out", group, sabotages)
    with timed("boot", f"negative control {group}"):
        report = boot_test_for(image, str(user_key), read_manifest(image), cards=cards, tamper=False).run()
    checks = {c["number"]: c for c in report["checks"]}
    failed = sorted(n for n, c in checks.items() if c["ok"] is False)
    assert failed == sorted(expected), {n: checks[n]["detail"] for n in failed}
    for number, why in expected.items():
        assert re.search(why, checks[number]["detail"]), (number, checks[number]["detail"])
    assert not report["passed"] and checks["0"]["ok"]


def test_an_image_entropi_did_not_build_is_judged_from_what_it_holds(base_arm64: Path, tmp_path: Path) -> None:
    """The Debian base (baked keys and the regenerator that replaces them at first boot, no rngd, no
    entropi unit, no first-boot growth), with no manifest beside it: judged from what it holds; the
    checks of entropi's unit and, without --key, the login are not applicable, never passed."""
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen")
    (tmp_path / "out").mkdir()
    image = tmp_path / "out" / "someone-elses.img"
    subprocess.run(["cp", "--sparse=always", str(base_arm64), str(image)], check=True)
    with timed("boot", "an image entropi did not build"):
        report = boot_test_for(image, "", read_manifest(image)).run()
    checks = {c["number"]: c for c in report["checks"]}
    assert report["arch"] == "arm64" and not report["built_by_entropi"]
    assert {n for n, c in checks.items() if c["ok"] is None} == {"4", "6", "7", "8", "10", "11", "12"}
    # its baked keys were read from the image itself; its own regenerator replaced them before sshd started
    assert checks["3"]["ok"] and checks["3"]["evidence"]["pre_baked_known"] == 3, checks["3"]["detail"]
    assert checks["5"]["ok"] is False and "no rngd process" in checks["5"]["detail"]
    assert checks["9"]["ok"] is False and re.search(r"partition end (\d+) -> \1 MiB", checks["9"]["detail"])
    assert checks["1b"]["ok"] and checks["0"]["ok"] and not report["passed"]
