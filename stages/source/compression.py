"""Compressed images, one set of rules for fetch (unpack) and flash.

Which compression a file has (magic bytes, or its name), the decompressor that streams it,
the raw image's name, the uncompressed size a stream records, and the loop that writes a
stream of chunks at successive offsets, hashing it, leaving holes where it is zero.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from stages.core.processes import run

MAGIC: list[tuple[bytes, str]] = [
    (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zst"), (b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"PK\x03\x04", "zip"),
]
# argv that writes the decompressed stream to stdout (the file's name is appended); zip is read in Python
TOOLS: dict[str, list[str]] = {
    "xz": ["xz", "-dc", "-T0", "-q"], "zst": ["zstd", "-dcq"], "gz": ["gzip", "-dc"], "bz2": ["bzip2", "-dc"],
}
SUFFIXES = {".xz": "xz", ".zst": "zst", ".gz": "gz", ".bz2": "bz2", ".zip": "zip"}
BLOCK = 4096  # holes are made in whole blocks of this size


class OutOfSpace(Exception):
    """The target is full (ENOSPC/EDQUOT) after ``written`` bytes, at byte ``at``."""

    def __init__(self, error: OSError, at: int, written: int) -> None:
        super().__init__(str(error))
        self.error, self.at, self.written = error, at, written


def kind_of(path: Path) -> str | None:
    """Compression by magic bytes (None: a raw image)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


def kind_from_name(name: str) -> str | None:
    """Compression by the file name's suffix (None: a raw image)."""
    return SUFFIXES.get(Path(name).suffix.lower())


def raw_name(name: str) -> str:
    """x.img.xz -> x.img; x.zip -> x.img; x -> x.img"""
    stem = name[: -len(Path(name).suffix)] if kind_from_name(name) else name
    return stem if stem.lower().endswith(".img") else stem + ".img"


def tool_for(kind: str) -> str | None:
    """The program that decompresses ``kind`` (None for zip and raw images)."""
    return TOOLS[kind][0] if kind in TOOLS else None


def decompress_argv(kind: str | None, path: Path) -> list[str] | None:
    """argv that writes the decompressed ``path`` to stdout, or None when no program is needed."""
    return [*TOOLS[kind], str(path)] if kind in TOOLS else None


def stream_size(path: Path, kind: str | None) -> int | None:
    """Uncompressed size recorded in an .xz index or a .zst frame header, else None."""
    if kind == "xz" and shutil.which("xz"):
        out = run(["xz", "--robot", "--list", str(path)], check=False).stdout.decode(errors="replace")
        m = re.search(r"^totals\t\d+\t\d+\t\d+\t(\d+)", out, re.M)
        return int(m.group(1)) if m else None
    if kind == "zst" and shutil.which("zstd"):
        out = run(["zstd", "-lv", str(path)], check=False).stdout.decode(errors="replace")
        m = re.search(r"Decompressed Size:.*\((\d+) B\)", out)
        return int(m.group(1)) if m else None
    return None


def read_chunks(reader: IO[bytes], size: int) -> Iterable[bytes]:
    """Whole chunks of ``size`` bytes (a pipe gives short reads), the last one what is left."""
    while True:
        buf = bytearray()
        while len(buf) < size and (part := reader.read(size - len(buf))):
            buf += part
        if not buf:
            return
        yield bytes(buf)


def data_runs(chunk: bytes, zero: bytes, block: int = BLOCK) -> list[tuple[int, int]]:
    """(start, end) of the runs of blocks in ``chunk`` that are not all zero (holes stay holes)."""
    if chunk == zero[: len(chunk)]:
        return []
    runs: list[tuple[int, int]] = []
    zblock = zero[:block]
    for start in range(0, len(chunk), block):
        end = min(start + block, len(chunk))
        if chunk[start:end] == zblock[: end - start]:
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def write_hashed(chunks: Iterable[bytes], fd: int, *, sparse: bool, advance: Callable[[int], None],
                 sync_every: int = 0) -> tuple[int, int, str]:
    """Write ``chunks`` at successive offsets of ``fd`` from 0 and hash them. -> (size, bytes written, SHA-256)

    ``sparse``: zero blocks are skipped (a file target keeps them as holes) and the file is
    cut at the end. ``sync_every``: flush to the device after this many bytes (0: only at
    the end), so that progress shows the device, not the page cache. The data is on disk
    when this returns. A full target raises OutOfSpace.
    """
    h, pos, written, unsynced, zero = hashlib.sha256(), 0, 0, 0, b""
    for chunk in chunks:
        h.update(chunk)
        if sparse and len(zero) < len(chunk):
            zero = bytes(len(chunk))
        for start, end in (data_runs(chunk, zero) if sparse else [(0, len(chunk))]):
            _write_at(fd, memoryview(chunk)[start:end], pos + start, written)
            written, unsynced = written + end - start, unsynced + end - start
        pos += len(chunk)
        if sync_every and unsynced >= sync_every:
            os.fdatasync(fd)
            unsynced = 0
        advance(len(chunk))
    try:
        if sparse:
            os.ftruncate(fd, pos)
        os.fsync(fd)
    except OSError as e:
        raise _full(e, pos, written) from None
    return pos, written, h.hexdigest()


def _write_at(fd: int, data: memoryview, pos: int, written: int) -> None:
    while data:
        try:
            n = os.pwrite(fd, data, pos)
        except OSError as e:
            raise _full(e, pos, written) from None
        data, pos, written = data[n:], pos + n, written + n


def _full(e: OSError, at: int, written: int) -> Exception:
    return OutOfSpace(e, at, written) if e.errno in (errno.ENOSPC, errno.EDQUOT) else e
