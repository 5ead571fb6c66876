"""Flash safety logic against faked sysfs and mountinfo trees: no root, no devices."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stages.core.errors import UserError
from stages.flash.device import Device, family, parse_mountinfo, refuse_unsafe, users
from stages.flash.source import open_source, parse_bmap
from stages.flash.write import ask, check_file_target, flash
from stages.source.compression import TOOLS, data_runs

MIB = 1 << 20


def make_disk(sysfs: Path, name: str, majmin: str, *, removable: bool = True, parts: dict[str, str] | None = None,
              holders: tuple[str, ...] = ()) -> None:
    b = sysfs / "class" / "block" / name
    (b / "holders").mkdir(parents=True)
    (b / "dev").write_text(majmin + "\n")
    (b / "removable").write_text("1\n" if removable else "0\n")
    for h in holders:
        (b / "holders" / h).mkdir()
    for part, pmm in (parts or {}).items():
        (b / part / "holders").mkdir(parents=True)
        (b / part / "partition").write_text("1\n")
        (b / part / "dev").write_text(pmm + "\n")
        d = sysfs / "class" / "block" / part  # the flat class/block view has the partitions too
        (d / "holders").mkdir(parents=True)
        (d / "partition").write_text("1\n")
        (d / "dev").write_text(pmm + "\n")


def card(name: str = "sdb", size: int = 32 << 30, **kw: object) -> Device:
    args: dict[str, object] = {"path": Path(f"/dev/{name}"), "name": name, "size": size, "removable": True,
                               "read_only": False, "partition": False, "model": "Generic SD/MMC",
                               "serial": "1234", "transport": "usb"}
    return Device(**{**args, **kw})  # type: ignore[arg-type]


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    make_disk(root, "sda", "8:0", removable=False, parts={"sda1": "8:1", "sda2": "8:2"})
    make_disk(root, "sdb", "8:16", parts={"sdb1": "8:17", "sdb2": "8:18"})
    make_disk(root, "sdc", "8:32", parts={"sdc1": "8:33"}, holders=())
    make_disk(root, "sdd", "8:48", parts={"sdd1": "8:49"})
    make_disk(root, "sde", "8:64")
    make_disk(root, "dm-0", "253:0")
    (root / "class" / "block" / "sdc1" / "holders" / "dm-0").mkdir()
    (root / "class" / "block" / "sdc" / "sdc1" / "holders" / "dm-0").mkdir()
    make_disk(root, "loop4", "7:4")
    (root / "class" / "block" / "loop4" / "loop").mkdir()
    (root / "class" / "block" / "loop4" / "loop" / "backing_file").write_text("/dev/sde\n")
    return root


def mountinfo(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text("".join(line + "\n" for line in lines))
    return path


ROOT_ON_SDA2 = "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw"
BOOT_ON_SDA1 = "23 22 8:1 / /boot/firmware rw shared:2 - vfat /dev/sda1 rw"


def test_parse_mountinfo_unescapes_spaces_and_skips_optional_fields() -> None:
    (m,) = parse_mountinfo(r"40 22 8:17 / /media/pi/my\040card rw shared:7 master:1 - vfat /dev/sdb1 rw")
    assert (m.majmin, m.mountpoint, m.source) == ("8:17", "/media/pi/my card", "/dev/sdb1")


def test_family_includes_partitions_holders_and_loop_devices_backed_by_it(sysfs: Path) -> None:
    assert set(family("sdb", sysfs)) == {"sdb", "sdb1", "sdb2"}
    assert set(family("sde", sysfs)) == {"sde", "loop4"}
    assert set(family("sdc", sysfs)) == {"sdc", "sdc1", "dm-0"}


def test_a_usb_card_with_nothing_mounted_is_accepted(sysfs: Path, tmp_path: Path) -> None:
    refuse_unsafe(card("sdd"), 3 << 30, force_non_removable=False, sysfs=sysfs,
                  mountinfo=mountinfo(tmp_path, ROOT_ON_SDA2, BOOT_ON_SDA1))


@pytest.mark.parametrize("dev,lines,pattern", [
    (card("sda", removable=False), [ROOT_ON_SDA2], r"holds the running system \(/ is mounted from sda2\)"),
    (card("sda", removable=False), [BOOT_ON_SDA1], r"holds the running system \(/boot/firmware .* sda1\)"),
    (card(), ["40 22 8:18 / /media/pi/rootfs rw - ext4 /dev/sdb2 rw"],
     r"is mounted \(sdb2 at /media/pi/rootfs\) \(hint: unmount it first: umount /media/pi/rootfs\)"),
    (card("sde"), ["41 22 7:4 / /mnt/x rw - ext4 /dev/loop4 rw"], r"is mounted \(loop4 at /mnt/x\)"),
    (card(), ["42 22 0:99 / /mnt/y rw - ext4 /dev/sdb1 rw"], r"is mounted \(sdb1 at /mnt/y\)"),  # btrfs-like dev ids
    (card("sdc"), ["43 22 253:0 / /srv rw - ext4 /dev/mapper/x rw"], r"is mounted \(dm-0 at /srv\)"),
    (card("sdc"), [], r"is in use by dm-0"),
    (card("sde"), [], r"is in use by loop4 \(.*a loop device\)"),
    (card("sda", removable=False), [], r"sda is not a removable device \(.*NOT removable\) .*--force-non-removable"),
    (card(partition=True, name="sdb1"), [], r"sdb1 is a partition, not a whole card"),
    (card(read_only=True), [], r"is read-only \(hint: slide the SD card's lock switch"),
    (card(size=0), [], r"has no medium"),
    (card(size=2 << 30), [], r"is too small: 2.1 GB \(2.00 GiB\) < image 3.2 GB \(3.00 GiB\)"),
])
def test_unsafe_targets_are_refused_with_one_line(sysfs: Path, tmp_path: Path, dev: Device, lines: list[str],
                                                   pattern: str) -> None:
    with pytest.raises(UserError, match=pattern) as err:
        refuse_unsafe(dev, 3 << 30, force_non_removable=False, sysfs=sysfs, mountinfo=mountinfo(tmp_path, *lines))
    assert "\n" not in err.value.render() and err.value.exit_code == 2


def test_force_non_removable_allows_a_fixed_disk_but_never_the_system_disk(sysfs: Path, tmp_path: Path) -> None:
    refuse_unsafe(card("sda", removable=False), None, force_non_removable=True, sysfs=sysfs,
                  mountinfo=mountinfo(tmp_path))
    with pytest.raises(UserError, match="holds the running system"):
        refuse_unsafe(card("sda", removable=False), None, force_non_removable=True, sysfs=sysfs,
                      mountinfo=mountinfo(tmp_path, ROOT_ON_SDA2))


def test_mount_users_lists_every_mount(sysfs: Path, tmp_path: Path) -> None:
    mi = mountinfo(tmp_path, "40 22 8:17 / /a rw - vfat /dev/sdb1 rw", "41 22 8:18 / /b rw - ext4 /dev/sdb2 rw",
                   ROOT_ON_SDA2)
    assert users("sdb", sysfs, mi) == [("sdb1", "/a"), ("sdb2", "/b")]


def test_confirmation_shows_model_size_serial_and_a_no_stops(tmp_path: Path) -> None:
    seen: list[str] = []

    def no(prompt: str) -> bool:
        seen.append(prompt)
        return False

    with pytest.raises(UserError, match="not confirmed, nothing was written"):
        ask(card(), tmp_path / "x.img", yes=False, confirm=no)
    assert "Generic SD/MMC, 34.4 GB (32.00 GiB), serial 1234, usb, removable" in seen[0]
    assert "Type 'sdb' or 'yes'" in seen[0]
    ask(card(), tmp_path / "x.img", yes=True, confirm=no)  # --yes never asks
    assert len(seen) == 1


def test_without_a_terminal_it_asks_for_yes_instead_of_hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UserError, match=r"\(stdin is not a terminal\) \(hint: pass --yes"):
        ask(card(), tmp_path / "x.img", yes=False, confirm=None)


def test_bad_hostname_is_refused_first(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"flash: --hostname: not a valid hostname: 'pi_1'"):
        flash(tmp_path / "missing.img", Path("/dev/sdz"), yes=True, to_file=False, force_non_removable=False,
              hostname="pi_1")


def test_missing_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing.img: no such image \(hint: build one with `invoke build`"):
        flash(tmp_path / "missing.img", tmp_path / "o.img", yes=True, to_file=True, force_non_removable=False,
              hostname=None)


def test_to_file_refuses_directories_missing_parents_and_the_image_itself(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(b"\0" * 512)
    with pytest.raises(UserError, match="exists and is not a regular file"):
        check_file_target(tmp_path, img)
    with pytest.raises(UserError, match="does not exist"):
        check_file_target(tmp_path / "no" / "y.img", img)
    with pytest.raises(UserError, match="is the image itself"):
        check_file_target(img, img)
    check_file_target(tmp_path / "y.img", img)


BMAP = """<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 10000 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 3 </BlocksCount>
    <MappedBlocksCount> 2 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BlockMap>
        <Range chksum="{a}"> 0 </Range>
        <Range chksum="{b}"> 2 </Range>
    </BlockMap>
</bmap>
"""


def test_bmap_is_found_for_compressed_images_and_its_last_block_is_clipped(tmp_path: Path) -> None:
    (tmp_path / "x.img.bmap").write_text(BMAP.format(a=hashlib.sha256(b"a").hexdigest(), b="00"))
    (tmp_path / "x.img.xz").write_bytes(b"")
    src = open_source(tmp_path / "x.img.xz")
    assert src.bmap is not None and src.size == 10000 and src.decompress == [*TOOLS["xz"], str(tmp_path / "x.img.xz")]
    assert list(src.bmap.spans()) == [(0, 4096, hashlib.sha256(b"a").hexdigest()), (8192, 1808, "00")]
    assert src.bmap.mapped_bytes == 4096 + 1808


def test_a_stale_bmap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.img.bmap").write_text(BMAP.format(a="", b=""))
    (tmp_path / "x.img").write_bytes(bytes(4096))
    with pytest.raises(UserError, match=r"x.img.bmap: belongs to another image \(it maps 10000 bytes"):
        open_source(tmp_path / "x.img")
    (tmp_path / "x.img.bmap").write_text("<bmap>")
    with pytest.raises(UserError, match="not a readable block map"):
        parse_bmap(tmp_path / "x.img.bmap")


def test_sparse_writer_keeps_zero_blocks_as_holes() -> None:
    zero = bytes(4 * MIB)
    chunk = bytearray(4 * MIB)
    chunk[5] = chunk[4096 + 7] = chunk[3 * 4096] = chunk[-1] = 1
    assert data_runs(bytes(chunk), zero) == [(0, 2 * 4096), (3 * 4096, 4 * 4096), (4 * MIB - 4096, 4 * MIB)]
    assert data_runs(zero[:100], zero) == []
    assert data_runs(b"\1" * 100, zero) == [(0, 100)]


def test_invoke_flash_prints_one_line_and_exits_2(tmp_path: Path, root_dir: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "x.img").write_bytes(bytes(4096))
    (tmp_path / "not-a-card").write_bytes(b"")
    res = subprocess.run([sys.executable, "-m", "invoke", "flash", "--image", str(tmp_path / "x.img"),
                          "--device", str(tmp_path / "not-a-card")], cwd=root_dir, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'not-a-card'}: not a block device (hint: give the "
                                               "card's device, e.g. /dev/sdX or /dev/mmcblkN; to write a file pass "
                                               "--to-file)"]


def test_hostname_needs_a_fat_partition_1_and_is_checked_before_writing(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    mbr = bytearray(1 << 20)
    mbr[446 + 4], mbr[446 + 8], mbr[446 + 12] = 0x83, 1, 8  # partition 1: Linux, not FAT
    mbr[510:512] = b"\x55\xaa"
    img.write_bytes(bytes(mbr))
    with pytest.raises(UserError, match=r"partition 1 is not a FAT boot partition, so --hostname has nowhere to go"):
        flash(img, tmp_path / "o.img", yes=True, to_file=True, force_non_removable=False, hostname="pi-1")
    assert not list(tmp_path.glob("*o.img*"))
