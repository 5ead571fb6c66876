"""stages.core.files.sha256_file on sparse and dense files (holes hashed as zeros, not read)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from stages.core.files import sha256_file

MIB = 1 << 20


@pytest.mark.parametrize("layout", [
    [],                                    # empty
    [("data", 3)],                         # dense, not a multiple of the buffer
    [("hole", 5)],                         # only a hole
    [("hole", 2), ("data", 1), ("hole", 3), ("data", 2), ("hole", 1)],
    [("data", 1), ("hole", 9)],            # hole to the end
])
def test_digest_equals_hashlib_over_the_bytes(tmp_path: Path, layout: list[tuple[str, int]]) -> None:
    path = tmp_path / "f.img"
    content = bytearray()
    with open(path, "wb") as f:
        for kind, mib in layout:
            chunk = os.urandom(mib * MIB - 123) if kind == "data" else bytes(mib * MIB)
            if kind == "data":
                f.write(chunk)
            else:
                f.seek(len(chunk), os.SEEK_CUR)
            content += chunk
        f.truncate(len(content))
    assert path.stat().st_size == len(content)
    assert sha256_file(path, bufsize=MIB) == hashlib.sha256(content).hexdigest()
