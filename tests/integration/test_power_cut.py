"""Power-cut safety of the first-boot program, proven on real file systems, not assumed.

In one libguestfs appliance (the host's kernel: real ext4 and vfat), the program runs as the
unit runs it on a card (a FAT32 boot partition and an ext4 root on one device, as on an SD
card) under dm-log-writes, which logs every write the card completes and every flush, in
order. The log is then replayed onto a copy of the card as it was before the run and, at each
flush and each FUA write (the points where the card has promised to keep what came before),
the card is mounted as the next boot would mount it (ext4 replays its journal) and checked:
what a power cut at that instant leaves, writes that were not flushed being lost. The same is
done for a copy of the program whose fsyncs are no-ops, which must fail those checks.

Deterministic: background writeback and the ext4 journal's timer are off in the appliance,
so every flush in the log is one of the program's fsyncs, or the sync after it ends; the log
has the same shape at every run. tests/support/powercut.py (host side) and
powercut_guest.py (in the appliance) say how; powercut_checks.py says what a cut must leave.
"""

from __future__ import annotations

import pytest

from tests.conftest import need_root, need_tools, timed
from tests.support.powercut import PowerCut, power_cuts

pytestmark = pytest.mark.integration

# The cases: the program as it is, and two negative controls: every fsync a no-op, and only
# the fsyncs of files (the directories' fsyncs stay, which shows the files' fsyncs matter).
CASES = ("", "all", "files")
# What exactly each negative control breaks (one line of PowerCut.violations()).
BROKEN = {
    "all": "cut right after the run ended, which reported 2 keys committed: committed None",
    "files": "ssh_host_ed25519_key is empty",
}


@pytest.fixture(scope="module")
def power_cut(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PowerCut]:
    need_root()
    need_tools("mke2fs", "mkfs.vfat", "qemu-img")
    pytest.importorskip("guestfs", reason="the libguestfs Python bindings are missing (run ./ci/setup)")
    with timed("power cut", "one appliance: the program, then two copies without fsyncs"):
        return power_cuts(tmp_path_factory.mktemp("powercut"), CASES)


def assert_ran_to_the_end(cut: PowerCut) -> None:
    verdict = cut.verdict()
    assert cut.run["exit"] == 0 and verdict["status"] == "ok", cut.run["stderr"]
    assert verdict["action"] == "first-run" and len(verdict["fingerprints"]) == 2, verdict
    # After the sync everything is on the card: the checks see the card the program wrote.
    assert cut.point("synced")["committed"] == verdict["fingerprints"], cut.point("synced")


def test_a_power_cut_at_any_flush_leaves_sound_keys_and_a_published_commit(power_cut: dict[str, PowerCut]) -> None:
    cut = power_cut[""]
    assert_ran_to_the_end(cut)
    flushes = [point for point in cut.points if not point["mark"]]
    # Each of the program's fsyncs is a point (ext4: the journal's flush and its FUA commit block).
    assert len(flushes) >= 40, f"only {len(flushes)} points: were the program's fsyncs logged?"
    # The sweep crosses the commit: first nothing committed (the next boot starts over), then the set.
    assert flushes[0]["committed"] is None and flushes[-1]["committed"] == cut.verdict()["fingerprints"]

    assert cut.violations() == []


@pytest.mark.parametrize("removed", sorted(BROKEN))
def test_without_its_fsyncs_a_power_cut_breaks_the_program(power_cut: dict[str, PowerCut], removed: str) -> None:
    cut = power_cut[removed]
    assert_ran_to_the_end(cut)

    found = cut.violations()

    assert any(BROKEN[removed] in line for line in found), "\n".join(found) or "no violation found"
