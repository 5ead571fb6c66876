"""firstboot/entropi-growroot: the partition table change it makes, on real MBR sectors."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from firstboot.tests.helpers import load_script

PROGRAM = Path(__file__).resolve().parents[1] / "entropi-growroot"
MIB = 2048  # sectors


def load() -> ModuleType:
    return load_script(PROGRAM)


def mbr(tmp_path: Path, boot_mib: int = 8, root_mib: int = 16, gpt: bool = False) -> bytes:
    """A real MBR written by sfdisk into a file: p1 FAT at 4 MiB, p2 Linux after it."""
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    with open(image, "wb") as f:
        f.truncate((4 + boot_mib + root_mib + 1) << 20)
    script = "label: gpt\n" if gpt else "label: dos\nlabel-id: 0x1234abcd\n"
    fat, linux = ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "L") if gpt else ("c", "83")
    script += (f"start=8192, size={boot_mib * MIB}, type={fat}\n"
               f"start={(4 + boot_mib) * MIB}, size={root_mib * MIB}, type={linux}\n")
    subprocess.run(["sfdisk", "-q", str(image)], input=script, text=True, check=True)
    return image.read_bytes()[:512]


def entry(sector: bytes, number: int) -> tuple[int, int]:
    lba, count = struct.unpack_from("<II", sector, 446 + 16 * (number - 1) + 8)
    return lba, count


def test_the_root_partition_runs_to_the_aligned_end_and_nothing_else_changes(tmp_path: Path) -> None:
    gr = load()
    sector = mbr(tmp_path)
    start, _ = entry(sector, 2)
    disk = 8 * 1024 * MIB + 77  # an 8 GiB card with an odd tail
    out = gr.new_mbr(sector, 2, start, disk, [8192])
    assert out is not None and len(out) == 512
    assert entry(out, 2) == (start, 8 * 1024 * MIB - start)
    assert (start + entry(out, 2)[1]) % MIB == 0
    assert out[:446 + 16 + 12] == sector[:446 + 16 + 12] and out[446 + 32:] == sector[446 + 32:]
    assert gr.new_mbr(out, 2, start, disk, [8192]) is None  # a second run changes nothing


@pytest.mark.parametrize("case", ["gpt", "not-last", "wrong-start", "card-too-small", "no-signature"])
def test_it_leaves_tables_it_must_not_touch(tmp_path: Path, case: str) -> None:
    gr = load()
    sector = mbr(tmp_path, gpt=case == "gpt")
    start, count = entry(sector, 2) if case != "gpt" else (0, 0)
    disk, others = 8 * 1024 * MIB, [8192]
    if case == "not-last":
        others.append(start + count)
    elif case == "wrong-start":
        start += MIB
    elif case == "card-too-small":
        disk = start + count
    elif case == "no-signature":
        sector = sector[:510] + b"\0\0"
    assert gr.new_mbr(sector, 2, start, disk, others) is None


def test_the_unit_runs_once_before_local_fs_and_the_program_is_python37_syntax() -> None:
    unit = (PROGRAM.parent / "entropi-growroot.service").read_text()
    assert "ConditionPathExists=!/var/lib/entropi/growroot.done" in unit and "WantedBy=local-fs.target" in unit
    import ast

    ast.parse(PROGRAM.read_text(), feature_version=(3, 7))
