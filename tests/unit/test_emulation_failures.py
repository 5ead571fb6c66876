"""Boots that fail under emulation are told apart from the image's own failures, and retried.

Console lines are real ones from raspi2b/raspi3b boots; the retry runs real qemu-img on a
small image, with scripted boots standing in for QEMU's verdicts.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from stages.boottest import RETRIES, Boot, BootTest, summary
from stages.disk import Partition
from stages.qemu import GUEST_CRASH, BootFiles, Machine

EMULATION_FAILURES = [
    "[   53.251909] sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt.",
    "[   84.684592] PC is at bcm2835_finish_data+0x38/0xa8 [bcm2835]",
    "[   84.702853]  bcm2835_finish_data [bcm2835] from bcm2835_dma_complete_work+0x12c/0x13c [bcm2835]",
    "[   51.026067] pc : bcm2835_finish_data+0x38/0xa8 [bcm2835]",
    "[   40.100000] pc : sdhci_request_done+0x30/0x2a0 [sdhci]",
    "[    5.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
    "[ TIME ] Timed out waiting for device /dev/disk/by-partuuid/6f495daa-01.",
]
ROUTINE = [
    # vchiq finds no VideoCore under QEMU and oopses; the boot goes on
    "[   51.010422] Internal error: Oops: 0000000096000007 [#1] SMP",
    "[   51.026067] pc : slot_handler_func+0x284/0x1550 [vchiq]",
    "[  365.810019] PC is at sync_func+0x3c/0x460 [vchiq]",
    "[   51.010898] Modules linked in: pwm_bcm2835 bcm2835_rng sdhci_iproc sdhci_pltfm sdhci bcm2835",
    "[   65.560424] bcm2835-rng 3f104000.rng: hwrng registered",
    "[    9.514432] sdhost-bcm2835 3f202000.mmc: loaded - DMA enabled (>1)",
    "[   12.217873] mmcblk0: mmc0:4567 QEMU! 2.00 GiB",
]


@pytest.mark.parametrize("line", EMULATION_FAILURES)
def test_emulation_failures_are_recognised(line: str) -> None:
    m = GUEST_CRASH.search("Booting Linux\n" + line + "\nmore\n")
    assert m and m.group(0).strip() in line


@pytest.mark.parametrize("line", ROUTINE)
def test_routine_console_lines_are_not_failures(line: str) -> None:
    assert GUEST_CRASH.search(line) is None


def _machine(tmp_path: Path, console: str) -> Machine:
    log = tmp_path / "serial.log"
    log.write_text(console)
    files = BootFiles(tmp_path / "kernel", None, tmp_path / "dtb", "", Partition(1, 0x0C, 8192, 8192))
    vm = Machine(files, tmp_path / "sd.qcow2", "armhf", log)
    vm.proc = subprocess.Popen(["sleep", "60"])  # a live process standing for QEMU
    vm.started = time.monotonic()
    return vm


def test_waiting_stops_at_an_emulation_failure(tmp_path: Path) -> None:
    vm = _machine(tmp_path, "Booting Linux\n" + EMULATION_FAILURES[0] + "\n")
    try:
        t0 = time.monotonic()
        assert vm.wait_for(r"hwrng registered", 60) is None
        assert time.monotonic() - t0 < 5
        assert vm.crash() == "sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt."
    finally:
        vm.kill()


def test_waiting_goes_on_past_routine_oopses(tmp_path: Path) -> None:
    vm = _machine(tmp_path, "\n".join(["Booting Linux", *ROUTINE]) + "\n")
    try:
        assert vm.wait_for(r"hwrng registered", 5) is not None
        assert vm.crash() is None
    finally:
        vm.kill()


class ScriptedBootTest(BootTest):
    """The real card logic (fresh qcow2 overlays, log keeping); each boot's verdict scripted."""

    def __init__(self, image: Path, out: Path, crashes: list[str]) -> None:
        super().__init__(image, "armhf", key=None, user="pi", out_dir=out)
        self.crashes = crashes  # labels whose next boot fails under emulation, in order
        self.booted: list[str] = []
        self.work.mkdir(parents=True)

    def boot(self, files: BootFiles, disk: Path, label: str, *, kill_at: str | None = None) -> Boot:
        assert disk.is_file()
        self.booted.append(label)
        self.log_path(label).write_text(f"console of {label}\n")
        if self.crashes and self.crashes[0] == label:
            self.crashes.pop(0)
            return Boot(label, crash="sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt.")
        return Boot(label, keys=[f"ssh-ed25519 {label}"])


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "out" / "t.img"
    img.parent.mkdir()
    with img.open("wb") as f:
        f.truncate(4 << 20)
    return img


def _files(tmp_path: Path) -> BootFiles:
    return BootFiles(tmp_path / "k", None, tmp_path / "d", "", Partition(1, 0x0C, 8192, 8192))


def test_a_card_that_fails_under_emulation_is_started_over(tmp_path: Path, image: Path) -> None:
    t = ScriptedBootTest(image, image.parent, ["A2"])
    retries: list[dict[str, str]] = []
    boots = t.card(_files(tmp_path), "A", [("A1", None), ("A2", None)], retries)
    assert t.booted == ["A1", "A2", "A1", "A2"]  # the whole card again: A2 needs A1's first boot
    assert all(not b.crash and b.keys for b in boots.values())
    assert retries == [{"card": "A", "boot": "A2",
                        "console": "sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt."}]
    assert (image.parent / "t.boot-A2-failed-1.log").read_text() == "console of A2\n"
    line = summary({"checks": [], "timings": {}, "retries": retries})
    assert "RETRY card A: boot A2 failed under emulation" in line


def test_retries_are_bounded_and_the_failure_is_reported(tmp_path: Path, image: Path) -> None:
    t = ScriptedBootTest(image, image.parent, ["A1"] * (RETRIES + 1))
    retries: list[dict[str, str]] = []
    boots = t.card(_files(tmp_path), "A", [("A1", None), ("A2", None)], retries)
    assert t.booted == ["A1"] * (RETRIES + 1)  # A2 is not booted after A1 failed
    assert boots["A1"].crash and not boots["A2"].keys and "not booted" in boots["A2"].error
    assert len(retries) == RETRIES


def test_a_good_card_boots_once(tmp_path: Path, image: Path) -> None:
    t = ScriptedBootTest(image, image.parent, [])
    retries: list[dict[str, str]] = []
    boots = t.card(_files(tmp_path), "C", [("C1", "making the rsa host key"), ("C2", None)], retries)
    assert t.booted == ["C1", "C2"] and not retries and set(boots) == {"C1", "C2"}
    assert not list(image.parent.glob("*failed*"))


def test_the_warning_prints_the_console_line_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    from stages import progress

    progress.warn("boot A1 (pc : bcm2835_finish_data+0x38/0xa8 [bcm2835])")
    out = capsys.readouterr()
    assert "[bcm2835]" in out.out + out.err
