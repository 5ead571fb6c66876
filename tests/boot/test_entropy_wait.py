"""The guard waits for the kernel's generator: a boot in which the crng is not ready when it starts.

On a copy of the built image the guard is started before systemd (tests/support/early_guard.py),
long before the kernel can have gathered 256 bits from interrupts alone. The report shows the
wait: the guard says it waited (seconds > 0, the crng not ready at its start), and the kernel's
own log puts its "crng init done" after the moment the guard started and before the first key
file was written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stages.boottest.run import boot_test_for, read_manifest
from tests.conftest import need_tools, timed
from tests.support import early_guard, sabotage

pytestmark = pytest.mark.boot


def test_a_boot_whose_crng_is_not_ready_at_the_guard_shows_the_wait(built_arm64: Path, user_key: Path,
                                                                     tmp_path: Path) -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen")
    image = sabotage.sabotaged_copy(built_arm64, tmp_path / "out", "early-guard", [early_guard.guard_before_systemd])
    with timed("boot", "entropy wait (the guard before systemd)"):
        report = boot_test_for(image, str(user_key), read_manifest(image), cards=("B",), tamper=False).run()
    checks = {c["number"]: c for c in report["checks"]}
    log = (tmp_path / "out" / "early-guard.boot.log").read_text(errors="replace")
    started = re.search(r"\[\s*(\d+\.\d+)\] " + re.escape(early_guard.STARTS), log)
    assert started, "the wrapper's kernel log line is not on the console"
    two = checks["2"]["evidence"]
    said = two["guard_says"]
    # the guard's own account: the crng was not ready when it started, and it waited
    assert said["at_start"]["crng_ready"] is False and said["waited_seconds"] > 0, said
    # The keys were written before systemd set the wall clock: their file times are seconds since
    # power on (the clock starts at 0 without an RTC), the kernel log's clock. (Check 2 converts
    # file times with today's offset between the clocks and cannot place these; in a normal boot
    # systemd sets the clock before any unit runs.)
    private = [k["mtime"] for k in report["probe"]["host_keys"] if k["path"].endswith("_key")]
    assert len(private) == 3 and max(private) < 3600, private
    # the kernel's account, on its own clock: guard started < crng init done <= first key written
    assert float(started.group(1)) < two["crng_init_at"] <= min(private), (started.group(1), two, private)
    assert said["at_start"]["uptime"] <= two["crng_init_at"], (said, two)
    # the card then boots as usual: its own unit finds the committed set, sshd serves it, published
    for number in ("1b", "3", "4", "5"):
        assert checks[number]["ok"], (number, checks[number]["detail"])
