"""Flashing to loop devices standing in for SD cards: bytes on the card, refusals, hostname, --to-file,
several cards at once."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from stages.core.errors import UserError
from stages.flash.fleet import flash_cards
from stages.flash.source import parse_bmap, verify_bmap
from stages.flash.write import flash
from tests.conftest import need_root, need_tools
from tests.support.flash_sample import MIB, make_sample_image

pytestmark = pytest.mark.integration
IMG_SIZE = 64 * MIB
ROOT_OFFSET = 17 * MIB


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB Pi-style image (partly mapped) with .bmap, .img.xz and .img.zst beside it."""
    need_root()
    need_tools("losetup", "bmaptool", "parted", "mkfs.vfat", "mkfs.ext4", "mcopy", "mtype", "xz", "zstd")
    img = make_sample_image(tmp_path_factory.mktemp("flash") / "sample.img")
    subprocess.run(["xz", "-T0", "-1", "-k", str(img)], check=True)
    subprocess.run(["zstd", "-q", "-k", str(img)], check=True)
    return img


@pytest.fixture(scope="module")
def nobmap(sample: Path) -> Path:
    """The same image and its compressed copies, in a directory without a .bmap."""
    d = sample.parent / "nobmap"
    d.mkdir()
    for suffix in ("", ".xz", ".zst"):
        shutil.copy(f"{sample}{suffix}", d / f"sample.img{suffix}")
    return d / "sample.img"


@contextmanager
def loop_card(backing: Path, size: int = 80 * MIB, garbage: bool = False, read_only: bool = False) -> Iterator[Path]:
    """A loop device over a sparse file: the SD card. ``garbage`` fills it with old data first;
    ``read_only`` makes the kernel refuse writes (losetup -r), like a card whose lock switch is on."""
    with open(backing, "wb") as f:
        f.truncate(size)
        if garbage:
            f.write(os.urandom(size))
    ro = ["-r"] if read_only else []
    dev = subprocess.run(["losetup", *ro, "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def fake_reader(root: Path, dev: Path, *, removable: bool = True) -> Path:
    """A sysfs tree in which ``dev`` is a USB SD card reader (or a fixed disk)."""
    real = Path("/sys/class/block") / dev.name
    b = root / "class" / "block" / dev.name
    (b / "device").mkdir(parents=True)
    (b / "holders").mkdir()
    for name in ("size", "dev", "ro"):
        (b / name).write_text((real / name).read_text())
    (b / "removable").write_text("1\n" if removable else "0\n")
    (b / "device" / "vendor").write_text("Generic \n")
    (b / "device" / "model").write_text("STORAGE DEVICE  \n")
    (b / "device" / "serial").write_text("000000001206\n")
    return root


def sha256_range(path: Path, length: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while length and (chunk := f.read(min(4 * MIB, length))):
            h.update(chunk)
            length -= len(chunk)
    return h.hexdigest()


def image_sha(path: Path) -> str:
    return sha256_range(path, IMG_SIZE)


def mtype_hostname(target: Path) -> bytes:
    return subprocess.run(["mtype", "-i", f"{target}@@{MIB}", "::entropi/hostname"], check=True, capture_output=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout


def test_bmap_flash_to_usb_reader_asks_writes_mapped_blocks_and_verifies(sample: Path, tmp_path: Path) -> None:
    asked: list[str] = []
    with loop_card(tmp_path / "card") as dev:
        sysfs = fake_reader(tmp_path / "sys", dev)
        report = flash(sample, dev, yes=False, to_file=False, force_non_removable=False, hostname=None,
                       sysfs=sysfs, confirm=lambda prompt: asked.append(prompt) is None)
        assert sha256_range(dev, IMG_SIZE) == image_sha(sample)
    assert report["method"] == "bmap" and report["verified"] is True
    assert 0 < report["bytes_written"] < IMG_SIZE / 2
    assert "Generic STORAGE DEVICE" in asked[0] and "000000001206" in asked[0] and "80.0 MiB" in asked[0]


def test_full_flash_without_bmap_overwrites_the_whole_range(nobmap: Path, sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card", garbage=True) as dev:
        report = flash(nobmap, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)
        assert sha256_range(dev, IMG_SIZE) == image_sha(sample)
    assert report["method"] == "full" and report["bytes_written"] == IMG_SIZE and report["verified"]


@pytest.mark.parametrize("suffix", [".xz", ".zst"])
@pytest.mark.parametrize("with_bmap", [True, False], ids=["bmap", "nobmap"])
def test_compressed_image_flashes_to_the_same_bytes(sample: Path, nobmap: Path, tmp_path: Path,
                                                    suffix: str, with_bmap: bool) -> None:
    image = Path(f"{sample if with_bmap else nobmap}{suffix}")
    with loop_card(tmp_path / "card") as dev:
        report = flash(image, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)
        assert sha256_range(dev, IMG_SIZE) == image_sha(sample)
    assert report["method"] == ("bmap" if with_bmap else "full")


def test_hostname_lands_in_boot_partition_of_the_card(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        flash(sample, dev, yes=True, to_file=False, force_non_removable=True, hostname="pi-07")
        assert mtype_hostname(dev) == b"pi-07\n"
        # the root partition is untouched by the per-card touch
        with open(dev, "rb") as f, open(sample, "rb") as g:
            f.seek(ROOT_OFFSET)
            g.seek(ROOT_OFFSET)
            assert f.read(IMG_SIZE - ROOT_OFFSET) == g.read(IMG_SIZE - ROOT_OFFSET)
        # flashing the same card again with another name replaces the file
        flash(sample, dev, yes=True, to_file=False, force_non_removable=True, hostname="pi-08")
        assert mtype_hostname(dev) == b"pi-08\n"


@pytest.mark.parametrize("source", ["bmap", "nobmap-zst"])
def test_to_file_writes_a_sparse_copy_equal_to_the_image(sample: Path, nobmap: Path, tmp_path: Path,
                                                         source: str) -> None:
    image = sample if source == "bmap" else Path(f"{nobmap}.zst")
    out = tmp_path / "copy.img"
    report = flash(image, out, yes=False, to_file=True, force_non_removable=False, hostname=None)
    assert out.stat().st_size == IMG_SIZE and image_sha(out) == image_sha(sample)
    assert out.stat().st_blocks * 512 < IMG_SIZE / 2, "not sparse"
    assert report["verified"] and not list(tmp_path.glob(".copy.img.tmp-*"))


def test_to_file_with_hostname(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "pi-09.img"
    flash(sample, out, yes=True, to_file=True, force_non_removable=False, hostname="pi-09")
    assert mtype_hostname(out) == b"pi-09\n"


def test_verify_reads_the_card_not_the_page_cache(sample: Path, tmp_path: Path) -> None:
    bmap = parse_bmap(Path(f"{sample}.bmap"))
    offset, _, _ = next(s for s in bmap.spans() if s[0] >= ROOT_OFFSET)
    with loop_card(tmp_path / "card") as dev:
        flash(sample, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)
        verify_bmap(dev, bmap)
        with open(dev, "rb") as f:  # pull the good bytes into the device's cache
            f.seek(offset)
            f.read(4096)
        with open(tmp_path / "card", "r+b") as f:  # the "card" decays behind the cache's back
            f.seek(offset)
            f.write(b"\xff" * 4096)
        with pytest.raises(UserError, match=rf"read-back differs from the image at byte {offset}"):
            verify_bmap(dev, bmap)


# --- refusals: each one line, nothing written -------------------------------------------------------


def refuse(pattern: str, image: Path, target: Path, **kw: object) -> None:
    args: dict[str, object] = {"yes": True, "to_file": False, "force_non_removable": False, "hostname": None}
    with pytest.raises(UserError, match=pattern) as err:
        flash(image, target, **{**args, **kw})  # type: ignore[arg-type]
    assert "\n" not in err.value.render()


def test_refuses_a_regular_file_without_to_file(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "not-a-card"
    target.write_bytes(b"")
    refuse(r"not-a-card: not a block device \(hint: .*--to-file\)", sample, target)
    refuse(r"no such device", sample, tmp_path / "sdz")


def test_refuses_to_file_onto_a_block_device(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        refuse(r"is a block device, and --to-file writes an image file", sample, dev, to_file=True)


def test_refuses_a_mounted_card(sample: Path, tmp_path: Path) -> None:
    need_tools("mount", "umount")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_card(tmp_path / "card") as dev:
        flash(sample, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)
        subprocess.run(["mount", "-o", f"loop,ro,offset={ROOT_OFFSET}", str(dev), str(mnt)], check=True)
        try:
            refuse(rf"{dev}: is mounted \(loop\d+ at {mnt}\) \(hint: unmount it first", sample, dev,
                   force_non_removable=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)


def test_refuses_the_disk_that_holds_root(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        sysfs = fake_reader(tmp_path / "sys", dev)
        majmin = (sysfs / "class" / "block" / dev.name / "dev").read_text().strip()
        mountinfo = tmp_path / "mountinfo"
        mountinfo.write_text(f"22 1 {majmin} / / rw,relatime shared:1 - ext4 {dev} rw\n")
        refuse(r"holds the running system \(/ is mounted from loop\d+\)", sample, dev, sysfs=sysfs,
               mountinfo=mountinfo)


def test_refuses_a_device_another_program_holds_exclusively(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            refuse(r"is busy \(mounted, swap, or held", sample, dev, sysfs=fake_reader(tmp_path / "sys", dev))
        finally:
            os.close(fd)


def test_refuses_a_non_removable_disk_unless_forced(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:  # a real loop device reports removable=0
        refuse(rf"{dev.name} is not a removable device .*--force-non-removable", sample, dev)


def test_refuses_a_card_smaller_than_the_image(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card", size=32 * MIB) as dev:
        refuse(r"is too small: 32.0 MiB < image 64.0 MiB", sample, dev, force_non_removable=True)


def test_refuses_a_bad_hostname_before_touching_anything(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        refuse(r"--hostname: not a valid hostname: '-pi_07'", sample, dev, hostname="-pi_07",
               force_non_removable=True)
        assert sha256_range(dev, IMG_SIZE) == hashlib.sha256(bytes(IMG_SIZE)).hexdigest()


def test_refuses_a_missing_image(tmp_path: Path) -> None:
    refuse(r"nope.img: no such image \(hint: build one", tmp_path / "nope.img", tmp_path / "out.img", to_file=True)


def test_unconfirmed_card_is_left_alone(sample: Path, tmp_path: Path) -> None:
    with loop_card(tmp_path / "card") as dev:
        refuse(r"not confirmed, nothing was written", sample, dev, yes=False, sysfs=fake_reader(tmp_path / "s", dev),
               confirm=lambda prompt: False)
        assert sha256_range(dev, IMG_SIZE) == hashlib.sha256(bytes(IMG_SIZE)).hexdigest()


@pytest.mark.parametrize("with_bmap", [True, False], ids=["bmap", "nobmap"])
def test_a_truncated_download_fails_loudly(sample: Path, nobmap: Path, tmp_path: Path, with_bmap: bool) -> None:
    broken = tmp_path / "sample.img.xz"
    data = Path(f"{sample}.xz").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    if with_bmap:
        shutil.copy(f"{sample}.bmap", tmp_path / "sample.img.bmap")
    with loop_card(tmp_path / "card") as dev, pytest.raises(UserError, match=r"xz|bmaptool|differs|decompressed"):
        flash(broken, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)


# --- several cards at once ------------------------------------------------------------------------


def readers(root: Path, *devs: Path) -> Path:
    """One sysfs tree in which every one of ``devs`` is a USB SD card reader, each with its own serial."""
    for i, dev in enumerate(devs):
        fake_reader(root, dev)
        (root / "class" / "block" / dev.name / "device" / "serial").write_text(f"00000000120{i}\n")
    return root


def root_partition_is_the_image(card: Path, sample: Path) -> bool:
    with open(card, "rb") as f, open(sample, "rb") as g:
        f.seek(ROOT_OFFSET)
        g.seek(ROOT_OFFSET)
        return f.read(IMG_SIZE - ROOT_OFFSET) == g.read(IMG_SIZE - ROOT_OFFSET)


def blank(backing: Path) -> bool:
    return sha256_range(backing, IMG_SIZE) == hashlib.sha256(bytes(IMG_SIZE)).hexdigest()


def test_three_cards_at_once_each_read_back_with_its_own_hostname(sample: Path, tmp_path: Path) -> None:
    asked: list[str] = []
    with ExitStack() as stack:
        devs = [stack.enter_context(loop_card(tmp_path / f"card{i}")) for i in range(3)]
        results = flash_cards(sample, devs, yes=False, force_non_removable=False, hostname="pi-{n:02}",
                              sysfs=readers(tmp_path / "sys", *devs), confirm=lambda p: asked.append(p) is None)
        assert [mtype_hostname(dev) for dev in devs] == [b"pi-01\n", b"pi-02\n", b"pi-03\n"]
        assert all(root_partition_is_the_image(dev, sample) for dev in devs)
    assert [(r.device, r.serial, r.hostname, r.verified) for r in results] == [
        (str(devs[0]), "000000001200", "pi-01", True), (str(devs[1]), "000000001201", "pi-02", True),
        (str(devs[2]), "000000001202", "pi-03", True)]
    assert all(0 < r.bytes_written < IMG_SIZE / 2 and r.seconds > 0 for r in results)
    assert len(asked) == 1, "one question for all cards"
    assert all(f"{dev}: Generic STORAGE DEVICE" in asked[0] and f"-> pi-0{i + 1}" in asked[0]
               for i, dev in enumerate(devs))


@pytest.mark.parametrize("with_bmap", [True, False], ids=["bmap", "nobmap"])
def test_a_locked_card_its_reader_does_not_report_fails_alone(
        sample: Path, nobmap: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, with_bmap: bool) -> None:
    """Many USB readers do not pass the lock switch on: sysfs says writable, the kernel refuses the write.
    The two good cards are written and verified, the table says which failed, `invoke flash` exits 1."""
    import tasks
    from stages.flash import fleet

    with ExitStack() as stack:
        devs = [stack.enter_context(loop_card(tmp_path / "card0")),
                stack.enter_context(loop_card(tmp_path / "card1", read_only=True)),
                stack.enter_context(loop_card(tmp_path / "card2"))]
        sysfs = readers(tmp_path / "sys", *devs)
        (sysfs / "class" / "block" / devs[1].name / "ro").write_text("0\n")
        monkeypatch.setattr(fleet, "flash_cards", functools.partial(fleet.flash_cards, sysfs=sysfs))
        with pytest.raises(Exit) as done:
            tasks.flash(Context(), image=str(sample if with_bmap else nobmap), device=[str(d) for d in devs], yes=True,
                        hostname="a,b,c")
        assert done.value.code == 1 and str(done.value.message) == "flash: 1 of 3 cards failed (see the table above)"
        assert mtype_hostname(devs[0]) == b"a\n" and mtype_hostname(devs[2]) == b"c\n"
        assert root_partition_is_the_image(devs[0], sample) and root_partition_is_the_image(devs[2], sample)
    assert blank(tmp_path / "card1")
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["device", "serial", "host", "name", "bytes", "seconds", "verified"]
    rows = [line.split() for line in out[1:4]]
    assert [(row[0], row[2], row[-1]) for row in rows] == [(str(devs[0]), "a", "yes"), (str(devs[1]), "b", "FAILED"),
                                                           (str(devs[2]), "c", "yes")]
    assert out[4] == "2 of 3 card(s) written and verified, 1 failed:"
    where = " at blocks 0-2" if with_bmap else ""
    assert out[5] == (f"error: {devs[1]}: cannot be written (Operation not permitted{where}) (hint: is the "
                      "card locked? slide its lock switch to unlocked; if not, it is failing)")


def test_one_refused_device_and_nothing_is_written_to_any(sample: Path, tmp_path: Path) -> None:
    """A mounted card and a card sysfs reports locked: one line each, then nothing is written at all."""
    need_tools("mount", "umount")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with ExitStack() as stack:
        devs = [stack.enter_context(loop_card(tmp_path / f"card{i}", read_only=i == 3)) for i in range(4)]
        flash(sample, devs[1], yes=True, to_file=False, force_non_removable=True, hostname=None)
        subprocess.run(["mount", "-o", f"loop,ro,offset={ROOT_OFFSET}", str(devs[1]), str(mnt)], check=True)
        stack.callback(subprocess.run, ["umount", str(mnt)], check=False)
        with pytest.raises(UserError) as refused:
            flash_cards(sample, devs, yes=True, force_non_removable=True, hostname="pi-{n}")
        lines = refused.value.render().splitlines()
        assert re.fullmatch(rf"error: {devs[1]}: is mounted \(loop\d+ at {mnt}\) \(hint: unmount it first.*", lines[0])
        assert lines[1:] == [f"error: {devs[3]}: is read-only (hint: slide the SD card's lock switch to unlocked)",
                             "error: flash: 2 of 4 devices refused, nothing was written "
                             "(hint: fix or leave out the devices above, then run again)"]
    assert blank(tmp_path / "card0") and blank(tmp_path / "card2")
