"""A small Pi-style sample image (MBR, FAT ``bootfs`` + ext4 ``rootfs``, partly mapped) with its .bmap.

Used by the flash tests and the flash benchmark, which cannot rely on a built image being there.
No mounts: mkfs.vfat/mtools at an offset for the FAT, ``mkfs.ext4 -d`` for the root.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from stages.core.processes import run
from stages.image.disk import MTOOLS_ENV
from stages.source.trixie_shape import BOOTFS, SEED_FILES, cmdline

MIB = 1 << 20


def make_sample_image(path: Path, *, size_mib: int = 64, boot_mib: int = 16, boot_data: int = 2 * MIB,
                      root_data: int = 12 * MIB, seed: int = 8, bmap: bool = True,
                      boot_files: dict[str, str] | None = None) -> Path:
    """Write a sparse disk image at ``path`` (and ``path.bmap``); returns ``path``. ``boot_files``
    (name: text) go onto the boot partition too, e.g. cloud-init's seed and cmdline.txt."""
    rnd = random.Random(seed)
    path.unlink(missing_ok=True)
    with open(path, "wb") as out:
        out.truncate(size_mib * MIB)
    run(["parted", "-s", str(path), "mklabel", "msdos",
         "mkpart", "primary", "fat32", "1MiB", f"{1 + boot_mib}MiB",
         "mkpart", "primary", "ext4", f"{1 + boot_mib}MiB", "100%"])
    fat32 = ["-F", "32", "-s", "1"] if boot_mib >= 64 else []  # FAT32 like Raspberry Pi OS, once big enough
    run(["mkfs.vfat", *fat32, "-n", "bootfs", "--offset", "2048", str(path), str(boot_mib * 1024)])
    with tempfile.TemporaryDirectory() as tmp:
        kernel = Path(tmp) / "kernel8.img"
        kernel.write_bytes(rnd.randbytes(boot_data))
        config = Path(tmp) / "config.txt"
        config.write_text("[all]\ndtparam=random=on\n")
        extra = []
        for name, text in (boot_files or {}).items():
            extra.append(Path(tmp) / name)
            extra[-1].write_text(text)
        for item in (kernel, config, *extra):
            run(["mcopy", "-i", f"{path}@@{MIB}", str(item), f"::{item.name}"], env=MTOOLS_ENV)
        root = Path(tmp) / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "hostname").write_text("raspberrypi\n")
        (root / "usr").mkdir()
        for i in range(0, root_data, 16 * MIB):
            (root / "usr" / f"blob{i // (16 * MIB):03d}").write_bytes(rnd.randbytes(min(16 * MIB, root_data - i)))
        offset = (1 + boot_mib) * MIB
        fs_kib = (size_mib * MIB - offset) // 1024
        run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(root), "-E", f"offset={offset}",
             str(path), f"{fs_kib}k"])
    if bmap:
        run(["bmaptool", "-q", "create", "-o", f"{path}.bmap", str(path)])
    return path


def trixie_boot_files(disk_id: str = "0a1b2c3d") -> dict[str, str]:
    """The boot files of the offline trixie base that a flash touches: cloud-init's NoCloud seed
    (meta-data, user-data, network-config, as the base has them) and its cmdline.txt."""
    return {**{name: (BOOTFS / name).read_text() for name in SEED_FILES}, "cmdline.txt": cmdline(disk_id)}
