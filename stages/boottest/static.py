"""1a, decided without booting: config.txt, read with the firmware's semantics, turns the hardware
RNG on for every Raspberry Pi model. (QEMU is given the device tree directly and never reads
config.txt, so no boot can show this.)"""

from __future__ import annotations

from pathlib import Path

from stages.boottest.checks import Check
from stages.core.errors import UserError
from stages.image.disk import fat_read, read_mbr
from stages.textedit.config_read import check_image_config

NAME = "config.txt turns the RNG on for every model"


def config_check(image: Path) -> Check:
    boot = next((p for p in read_mbr(image).partitions if p.is_fat), None)

    def read(name: str) -> str | None:
        if boot is None:
            return None
        try:
            return fat_read(image, boot, name).decode(errors="replace")
        except UserError:
            return None

    ok, detail, evidence = check_image_config(read)
    return Check("1a", NAME, ok, detail, evidence)
