"""An ext4 file system's size and the smallest size resize2fs can shrink it to."""

from __future__ import annotations

import re

from stages.core.errors import UserError
from stages.core.processes import text


def fs_geometry(device: str) -> tuple[int, int]:
    """(block count, block size) of the ext4 file system on ``device``."""
    head = text(["dumpe2fs", "-h", device])
    fields = dict(re.findall(r"^(Block count|Block size):\s+(\d+)$", head, re.M))
    return int(fields["Block count"]), int(fields["Block size"])


def minimum_blocks(device: str) -> int:
    out = text(["resize2fs", "-P", device])
    m = re.search(r"minimum size of the filesystem:\s*(\d+)", out)
    if not m:
        raise UserError(device, f"resize2fs -P gave no minimum size: {out.strip()!r}", hint="run e2fsck -f on it")
    return int(m.group(1))
