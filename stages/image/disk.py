"""Raw disk images: the MBR partition table and FAT access through mtools (no mounts)."""

from __future__ import annotations

import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import UserError
from stages.core.processes import run, text

SECTOR = 512
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@dataclass(frozen=True)
class Partition:
    number: int
    type_id: int
    start: int  # bytes
    size: int  # bytes

    @property
    def is_fat(self) -> bool:
        return self.type_id in (0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E)


@dataclass(frozen=True)
class Mbr:
    disk_id: str  # 8 hex digits, as in PARTUUID=<disk_id>-02
    partitions: list[Partition]


def read_mbr(image: Path) -> Mbr:
    """Read the MBR of an image or device; UserError if it is not an MBR disk."""
    with open(image, "rb") as f:
        head = f.read(SECTOR)
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        raise UserError(str(image), "not a disk image (no MBR boot signature)",
                        hint="give a raw Raspberry Pi OS image (.img), not a compressed or partition file")
    disk_id = f"{struct.unpack_from('<I', head, 440)[0]:08x}"
    parts = []
    for i in range(4):
        status, ptype, lba, count = struct.unpack_from("<B3xB3xII", head, 446 + 16 * i)
        if ptype == 0xEE:
            raise UserError(str(image), "GPT partition table; Raspberry Pi OS images use MBR",
                            hint="use an MBR image as Raspberry Pi OS ships them")
        if ptype and count:
            parts.append(Partition(i + 1, ptype, lba * SECTOR, count * SECTOR))
    return Mbr(disk_id, parts)


def attach_partition(image: Path, part: Partition) -> str:
    """A loop device over ``part`` of ``image`` (by offset and size limit); free it with detach_loop."""
    return text(["losetup", "--find", "--show", "--offset", str(part.start), "--sizelimit", str(part.size),
                 str(image)])


def detach_loop(loop: str | None) -> None:
    """Free a loop device made by attach_partition (None or an already freed one: nothing to do)."""
    if loop is not None:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def fat_spec(image: Path, part: Partition) -> str:
    """mtools image spec for a partition at an offset: FILE@@OFFSET."""
    return f"{image}@@{part.start}"


def fat_read(image: Path, part: Partition, name: str) -> bytes:
    """Read one file from a FAT partition with mtools."""
    res = run(["mtype", "-i", fat_spec(image, part), f"::{name}"], env=MTOOLS_ENV)
    return res.stdout


def fat_copy_out(image: Path, part: Partition, name: str, dest: Path) -> None:
    run(["mcopy", "-n", "-o", "-i", fat_spec(image, part), f"::{name}", str(dest)], env=MTOOLS_ENV)


def fat_list(image: Path, part: Partition) -> list[str]:
    out = run(["mdir", "-b", "-i", fat_spec(image, part), "::/"], env=MTOOLS_ENV).stdout.decode()
    return [line.strip().lstrip(":").lstrip("/") for line in out.splitlines() if line.strip()]
