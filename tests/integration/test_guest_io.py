"""stages.image.guest_files's file helpers on a real appliance: pread/write paths and upload for big files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stages.image.guest import open_guest
from stages.image.guest_files import CHUNK, put_file, read_bytes, read_text, write_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def g(tmp_path_factory: pytest.TempPathFactory) -> Any:
    disk = tmp_path_factory.mktemp("guest") / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    handle = open_guest([(disk, "raw", False)])
    handle.mkfs("ext4", "/dev/sda")
    handle.mount("/dev/sda", "/")
    yield handle
    handle.close()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_put_then_read_back(g: Any, tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    data = os.urandom(size)
    src.write_bytes(data)
    os.chmod(src, 0o640)
    put_file(g, src, f"/f{size}", 0o751)
    assert read_bytes(g, f"/f{size}") == data
    assert g.statns(f"/f{size}")["st_mode"] & 0o7777 == 0o751


def test_text_round_trip_keeps_undecodable_bytes(g: Any) -> None:
    write_text(g, "/t", "line\r\nbyte \udcff\n", 0o600)
    assert g.pread("/t", 100, 0) == b"line\r\nbyte \xff\n"
    assert read_text(g, "/t") == "line\r\nbyte \udcff\n"
