"""Boots that fail under emulation are told apart from the image's own failures; only the
emulator's named faults are retried, once, on record.

Console lines are real ones from raspi2b/raspi3b boots; the retry runs real qemu-img on a
small image, with scripted boots standing in for QEMU's verdicts.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from stages.boottest.base_boot import Attempt, boot_base
from stages.boottest.bootfiles import BootFiles
from stages.boottest.cards import RETRIES, Cards
from stages.boottest.evidence import Boot
from stages.boottest.faults import Failure, find_failure
from stages.boottest.machine import Machine, overlay
from stages.boottest.prepare import Facts
from stages.boottest.verdict import summary
from stages.image.disk import Partition

EMULATOR_FAULTS = [  # (name, real console line)
    ("sd-host-timeout", "[   53.251909] sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt."),
    ("sd-host-oops", "[   84.684592] PC is at bcm2835_finish_data+0x38/0xa8 [bcm2835]"),
    ("sd-host-oops", "[   84.702853]  bcm2835_finish_data [bcm2835] from bcm2835_dma_complete_work+0x12c/0x13c "
                     "[bcm2835]"),
    ("sd-host-oops", "[   51.026067] pc : bcm2835_finish_data+0x38/0xa8 [bcm2835]"),
    ("sd-host-oops", "[   40.100000] pc : sdhci_request_done+0x30/0x2a0 [sdhci]"),
    ("usb-net-lost", "[   40.035989] usb usb1-port1: attempt power cycle"),
]
IMAGE_FAILURES = [  # the image's fault until shown otherwise: never retried
    ("kernel-panic", "[    5.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"),
    ("device-timeout", "[ TIME ] Timed out waiting for device /dev/disk/by-partuuid/6f495daa-01."),
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
    "[   38.537761] usb 1-1: new full-speed USB device number 2 using dwc2",
    "[   41.309488] dwc2 3f980000.usb: Not connected",
]


@pytest.mark.parametrize("name, line", EMULATOR_FAULTS)
def test_emulator_faults_are_named(name: str, line: str) -> None:
    f = find_failure("Booting Linux\n" + line + "\nmore\n")
    assert f is not None and f.emulator and f.name == name and f.line in line


@pytest.mark.parametrize("name, line", IMAGE_FAILURES)
def test_panics_and_missing_devices_are_the_images_failures(name: str, line: str) -> None:
    f = find_failure("Booting Linux\n" + line + "\n")
    assert f is not None and not f.emulator and f.name == name


def test_the_first_failure_on_the_console_decides() -> None:
    panic, sd = IMAGE_FAILURES[0][1], EMULATOR_FAULTS[0][1]
    first_panic = find_failure(f"{panic}\n{sd}\n")
    assert first_panic is not None and not first_panic.emulator
    first_fault = find_failure(f"{sd}\n{panic}\n")
    assert first_fault is not None and first_fault.emulator


@pytest.mark.parametrize("line", ROUTINE)
def test_routine_console_lines_are_not_failures(line: str) -> None:
    assert find_failure(line) is None


def _machine(tmp_path: Path, console: str) -> Machine:
    log = tmp_path / "serial.log"
    log.write_text(console)
    files = BootFiles(tmp_path / "kernel", None, tmp_path / "dtb", "", Partition(1, 0x0C, 8192, 8192))
    vm = Machine(files, tmp_path / "sd.qcow2", "armhf", log)
    vm.proc = subprocess.Popen(["sleep", "60"])  # a live process standing for QEMU
    vm.started = time.monotonic()
    return vm


def test_waiting_stops_at_an_emulation_failure(tmp_path: Path) -> None:
    vm = _machine(tmp_path, "Booting Linux\n" + EMULATOR_FAULTS[0][1] + "\n")
    try:
        t0 = time.monotonic()
        assert vm.wait_for(r"hwrng registered", 60) is None
        assert time.monotonic() - t0 < 5
        assert vm.failure() == Failure("sd-host-timeout",
                                       "sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt.", True)
    finally:
        vm.kill()


def test_waiting_goes_on_past_routine_oopses(tmp_path: Path) -> None:
    vm = _machine(tmp_path, "\n".join(["Booting Linux", *ROUTINE]) + "\n")
    try:
        assert vm.wait_for(r"hwrng registered", 5) is not None
        assert vm.failure() is None
    finally:
        vm.kill()


class ScriptedCards(Cards):
    """The real card logic (fresh qcow2 overlays, log keeping); each boot's verdict scripted."""

    def __init__(self, image: Path, out: Path, crashes: list[str]) -> None:
        work = out / ".boot-t"
        super().__init__(_files(out), "armhf", Facts(), key=None, out_dir=out, name="t", work=work, timeout=60,
                         key_count=0)
        self.card_bytes = 8 << 20
        self.crashes = crashes  # labels whose next boot fails, in order (EMULATOR_FAULTS unless "!label")
        self.booted: list[str] = []
        self.work.mkdir(parents=True)
        self.prepared = out / "prepared.qcow2"
        overlay(image, "raw", self.prepared, image.stat().st_size)

    def boot(self, disk: Path, label: str, *, cut_at: str | None = None, again: bool = False) -> Boot:
        assert disk.is_file()
        self.booted.append(label)
        self.log_path(label).write_text(f"console of {label}\n")
        if self.crashes and self.crashes[0].lstrip("!") == label:
            image_fault = self.crashes.pop(0).startswith("!")
            line = (IMAGE_FAILURES if image_fault else EMULATOR_FAULTS)[0][1].split("] ", 1)[1]
            return Boot(label, failure=find_failure(line))
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
    t = ScriptedCards(image, image.parent, ["A2"])
    retries: list[dict[str, str]] = []
    boots = t.card(t.prepared, image.parent, "A", [("A1", None), ("A2", None)], retries)
    assert t.booted == ["A1", "A2", "A1", "A2"]  # the whole card again: A2 needs A1's first boot
    assert all(not b.failure and b.keys for b in boots.values())
    assert retries == [{"card": "A", "boot": "A2", "fault": "sd-host-timeout",
                        "console": "sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware interrupt."}]
    assert (image.parent / "t.boot-A2-failed-1.log").read_text() == "console of A2\n"
    line = summary({"checks": [], "timings": {}, "retries": retries})
    assert "RETRY card A: boot A2 hit emulator fault sd-host-timeout" in line


def test_retries_are_bounded_and_the_failure_is_reported(tmp_path: Path, image: Path) -> None:
    t = ScriptedCards(image, image.parent, ["A1"] * (RETRIES + 1))
    retries: list[dict[str, str]] = []
    boots = t.card(t.prepared, image.parent, "A", [("A1", None), ("A2", None)], retries)
    assert t.booted == ["A1"] * (RETRIES + 1)  # A2 is not booted after A1 failed
    assert boots["A1"].failure and not boots["A2"].keys and "not booted" in boots["A2"].error
    assert len(retries) == RETRIES


def test_an_unclassified_boot_failure_is_not_retried(tmp_path: Path, image: Path) -> None:
    t = ScriptedCards(image, image.parent, ["!A1"])  # a kernel panic: the image's failure
    retries: list[dict[str, str]] = []
    boots = t.card(t.prepared, image.parent, "A", [("A1", None), ("A2", None)], retries)
    assert t.booted == ["A1"] and retries == []
    failure = boots["A1"].failure
    assert failure is not None and failure.name == "kernel-panic" and not failure.emulator
    assert "not booted" in boots["A2"].error


def test_a_good_card_boots_once(tmp_path: Path, image: Path) -> None:
    t = ScriptedCards(image, image.parent, [])
    retries: list[dict[str, str]] = []
    boots = t.card(t.prepared, image.parent, "C", [("C1", "making the rsa host key"), ("C2", None)], retries)
    assert t.booted == ["C1", "C2"] and not retries and set(boots) == {"C1", "C2"}
    assert not list(image.parent.glob("*failed*"))


def test_the_warning_prints_the_console_line_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    from stages.core import progress

    progress.warn("boot A1 (pc : bcm2835_finish_data+0x38/0xa8 [bcm2835])")
    out = capsys.readouterr()
    assert "[bcm2835]" in out.out + out.err


def _scripted_boot_once(results: list[Attempt]) -> tuple[list[str], object]:
    labels: list[str] = []

    def fake(image: Path, arch: str, work: Path, label: str, **kw: object) -> Attempt:
        labels.append(label)
        return results.pop(0)

    return labels, fake


@pytest.mark.parametrize("first, boots", [
    (Failure("kernel-panic", "Kernel panic - not syncing", False), 1),
    (Failure("device-timeout", "Timed out waiting for device /dev/x", False), 1),
    (Failure("sd-host-timeout", "sdhost-bcm2835 x: timeout waiting for hardware interrupt.", True), 2),
])
def test_the_base_boot_retries_only_an_emulator_fault_and_only_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: Failure, boots: int) -> None:
    import stages.boottest.base_boot as bb

    again = Attempt(tmp_path / "b", failure=first)
    labels, fake = _scripted_boot_once([Attempt(tmp_path / "a", failure=first), again])
    monkeypatch.setattr(bb, "boot_once", fake)
    result = boot_base(tmp_path / "img", "armhf", tmp_path, expected_types=[])
    assert len(labels) == boots and not result.ok
    assert len(result.emulator_faults) == (2 if first.emulator else 0)


def test_the_qemu_command_line_keeps_the_images_options_and_adds_rodata_off_only_on_armhf() -> None:
    from stages.boottest.bootfiles import qemu_cmdline

    original = ("console=serial0,115200 console=tty1 root=PARTUUID=6f495daa-02 rootfstype=ext4 "
                "fsck.repair=yes fsck.mode=force rodata=full rootwait quiet")
    armhf, arm64 = qemu_cmdline(original, "armhf").split(), qemu_cmdline(original, "arm64").split()
    for words in (armhf, arm64):
        assert "root=PARTUUID=6f495daa-02" in words and "fsck.repair=yes" in words and "rootwait" in words
        assert "fsck.mode=force" in words and "quiet" not in words
        assert words.count("console=ttyAMA0,115200") == 1 and "console=tty1" not in words
    assert armhf.count("rodata=off") == 1 and "rodata=full" not in armhf
    assert "rodata=full" in arm64 and "rodata=off" not in arm64


def test_later_boots_read_cmdline_txt_from_the_card_as_it_is_now(tmp_path: Path) -> None:
    """The firmware reads cmdline.txt at every power-on: a first boot that rewrote it (trixie's
    initramfs resize, new disk id) is booted with the new root= the second time."""
    from stages.boottest.bootfiles import card_cmdline, card_mbr
    from stages.core.processes import run
    from stages.image.disk import MTOOLS_ENV, read_mbr
    from tests.support.flash_sample import make_sample_image

    image = make_sample_image(tmp_path / "pi.img", size_mib=32, boot_mib=8, root_data=1 << 20, bmap=False)
    boot = read_mbr(image).partitions[0]
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=serial0,115200 root=PARTUUID=1111aaaa-02 rootwait resize\n")
    run(["mcopy", "-i", f"{image}@@{boot.start}", str(cmdline), "::cmdline.txt"], env=MTOOLS_ENV)
    card = tmp_path / "card.qcow2"
    overlay(image, "raw", card, image.stat().st_size)
    assert "root=PARTUUID=1111aaaa-02" in card_cmdline(card, boot, "arm64").split()
    # what the first boot did: a new disk id in cmdline.txt, written to the card (not the image)
    raw = tmp_path / "boot.raw"
    run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", f"skip={boot.start // 512}",
         f"count={boot.size // 512}", f"if={card}", f"of={raw}"])
    cmdline.write_text("console=serial0,115200 root=PARTUUID=2222bbbb-02 rootwait\n")
    run(["mcopy", "-o", "-i", str(raw), str(cmdline), "::cmdline.txt"], env=MTOOLS_ENV)
    run(["qemu-io", "-f", "qcow2", "-c", f"write -s {raw} {boot.start} {boot.size}", str(card)])
    words = card_cmdline(card, boot, "arm64").split()
    assert "root=PARTUUID=2222bbbb-02" in words and "resize" not in words
    assert "root=PARTUUID=1111aaaa-02" in qemu_cmdline_of(image, boot)  # the image itself is untouched
    # and the new disk identifier in the card's MBR, as check 11 reads it on the host
    before = card_mbr(card)
    assert before.disk_id == read_mbr(image).disk_id
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xbb 440 2", "-c", "write -P 0x22 442 2", str(card)])
    after = card_mbr(card)
    assert after.disk_id == "2222bbbb" and after.partitions == before.partitions
    assert read_mbr(image).disk_id == before.disk_id


@pytest.mark.parametrize(("start", "size", "block"), [
    (4 << 20, 512 << 20, 4 << 20), (8 << 20, 256 << 20, 4 << 20), (1 << 20, 63 << 20, 1 << 20),
    (2048 * 512, (2048 * 512) + 1536, 512), (512 * 63, 512 << 10, 512)])
def test_the_card_s_boot_partition_is_copied_in_the_largest_block_that_fits(start: int, size: int,
                                                                             block: int) -> None:
    from stages.boottest.bootfiles import dd_block

    assert dd_block(Partition(1, 0x0C, start, size)) == block


def qemu_cmdline_of(image: Path, boot: Partition) -> str:
    from stages.image.disk import fat_read

    return fat_read(image, boot, "cmdline.txt").decode()
