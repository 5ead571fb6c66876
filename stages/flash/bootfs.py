"""The card's FAT boot partition (partition 1), read and written with mtools at its offset (no mount)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from stages.core.errors import UserError
from stages.core.processes import run
from stages.flash.device import settle
from stages.image.disk import MTOOLS_ENV, Partition, fat_spec, read_mbr


def boot_partition(disk: Path, option: str = "--hostname") -> Partition:
    """Partition 1, which must be FAT: where the first-boot unit and cloud-init look for what flash puts."""
    boot = next((p for p in read_mbr(disk).partitions if p.number == 1), None)
    if boot is None or not boot.is_fat:
        raise UserError(str(disk), f"partition 1 is not a FAT boot partition, so {option} has nowhere to go",
                        hint=f"flash a Raspberry Pi OS image, or drop {option}")
    return boot


def boot_files(disk: Path, option: str = "--hostname") -> set[str]:
    """The names in the boot partition's top directory."""
    spec = fat_spec(disk, boot_partition(disk, option))
    out = run(["mdir", "-b", "-i", spec, "::/"], env=MTOOLS_ENV).stdout.decode(errors="replace")
    return {line.strip().removeprefix("::/").lstrip("/") for line in out.splitlines() if line.strip()}


def read_boot_file(disk: Path, name: str) -> str | None:
    """A text file of the boot partition; None when there is none."""
    spec = fat_spec(disk, boot_partition(disk))
    res = run(["mtype", "-i", spec, f"::{name}"], env=MTOOLS_ENV, check=False)
    return res.stdout.decode(errors="replace") if res.returncode == 0 else None


def put_boot_files(target: Path, files: dict[str, str]) -> None:
    """Write each file (its name may have one directory, made as needed) onto the card, flush, read back."""
    spec = fat_spec(target, boot_partition(target))
    for folder in sorted({name.rpartition("/")[0] for name in files} - {""}):
        run(["mmd", "-D", "s", "-i", spec, f"::{folder}"], env=MTOOLS_ENV, check=False)  # exit 1 when it exists
    with tempfile.TemporaryDirectory(prefix="entropi-bootfs-") as tmp:
        for i, (name, content) in enumerate(files.items()):
            local = Path(tmp) / str(i)
            local.write_text(content)
            run(["mcopy", "-o", "-i", spec, str(local), f"::{name}"], env=MTOOLS_ENV)
    settle(target)
    for name, content in files.items():
        back = run(["mtype", "-i", spec, f"::{name}"], env=MTOOLS_ENV).stdout
        if back != content.encode():
            raise UserError(str(target), f"{name} on the boot partition reads back as {back[:80]!r}",
                            hint="the card may be failing")
