"""The image to flash: raw or compressed, its block map, its size, and reading a card back."""

from __future__ import annotations

import hashlib
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stages.core import progress
from stages.core.errors import UserError
from stages.source.compression import decompress_argv, kind_from_name, raw_name, stream_size

CHUNK = 4 << 20


@dataclass(frozen=True)
class BlockMap:
    path: Path
    image_size: int
    block_size: int
    checksum_type: str
    ranges: list[tuple[int, int, str]]  # first block, last block (inclusive), checksum

    def spans(self) -> Iterator[tuple[int, int, str]]:
        """(offset, length, checksum) in bytes; the last block is clipped to the image size."""
        for first, last, digest in self.ranges:
            start = first * self.block_size
            yield start, min((last + 1) * self.block_size, self.image_size) - start, digest

    @property
    def mapped_bytes(self) -> int:
        return sum(length for _, length, _ in self.spans())


@dataclass(frozen=True)
class Source:
    path: Path
    decompress: list[str] | None  # argv that writes the raw image to stdout, or None for a raw image
    bmap: BlockMap | None
    size: int | None  # raw image bytes, None when a compressed stream does not record it


def parse_bmap(path: Path) -> BlockMap:
    try:
        root = ET.parse(path).getroot()
        image_size = int((root.findtext("ImageSize") or "").strip())
        block_size = int((root.findtext("BlockSize") or "").strip())
        ctype = (root.findtext("ChecksumType") or "sha1").strip()
        ranges = []
        for r in root.iter("Range"):
            first, _, last = (r.text or "").strip().partition("-")
            ranges.append((int(first), int(last or first), r.get("chksum") or r.get("sha1") or ""))
    except (ET.ParseError, ValueError, OSError) as e:
        raise UserError(str(path), f"not a readable block map: {e}",
                        hint="recreate it with `bmaptool create -o IMG.bmap IMG`, or delete it") from None
    if ctype not in hashlib.algorithms_available:
        raise UserError(str(path), f"unknown checksum type {ctype!r}", hint="recreate it with a current bmaptool")
    return BlockMap(path, image_size, block_size, ctype, ranges)


def open_source(image: Path) -> Source:
    """Check the image and find its block map (NAME.img.bmap serves NAME.img.xz too)."""
    if not image.is_file():
        raise UserError(str(image), "no such image" if not image.exists() else "not a file",
                        hint="build one with `invoke build`, or check the path")
    kind = kind_from_name(image.name)
    decompress = decompress_argv(kind, image)
    if decompress and shutil.which(decompress[0]) is None:
        raise UserError(str(image), f"{decompress[0]} is needed to read this image", hint="run ./ci/setup")
    raw = image.with_name(raw_name(image.name)) if decompress else image
    candidates = [image.with_name(image.name + ".bmap"), raw.with_name(raw.name + ".bmap")]
    bmap_path = next((p for p in candidates if p.is_file()), None)
    bmap = parse_bmap(bmap_path) if bmap_path else None
    size = image.stat().st_size if decompress is None else bmap.image_size if bmap else stream_size(image, kind)
    if bmap and decompress is None and bmap.image_size != size:
        raise UserError(str(bmap.path), f"belongs to another image (it maps {bmap.image_size} bytes, "
                        f"{image.name} has {size})", hint="recreate it with `bmaptool create`, or delete it")
    return Source(image, decompress, bmap, size)


def drop_cache(fd: int) -> None:
    """Forget cached pages so the next read comes from the card, not from memory."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def verify_bmap(target: Path, bmap: BlockMap, meter: progress.Meter = progress.bar) -> None:
    """Read every mapped range back from ``target`` and compare it with the block map's checksums.

    Ranges are hashed on all cores (hashlib and pread release the GIL); the first bad range is reported.
    """
    fd = os.open(target, os.O_RDONLY)
    try:
        drop_cache(fd)
        with meter("verify", bmap.mapped_bytes) as bar:

            def check(span: tuple[int, int, str]) -> int | None:
                offset, length, want = span
                h = hashlib.new(bmap.checksum_type)
                for chunk in _read_range(fd, offset, length, target):
                    h.update(chunk)
                    bar.advance(len(chunk))
                return offset if want and h.hexdigest() != want else None

            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                bad = [offset for offset in pool.map(check, bmap.spans()) if offset is not None]
    finally:
        os.close(fd)
    if bad:
        raise UserError(str(target), f"read-back differs from the image at byte {bad[0]}",
                        hint="the card may be failing or fake; try another card")


def verify_digest(target: Path, length: int, want: str, meter: progress.Meter = progress.bar) -> None:
    """SHA-256 of the first ``length`` bytes read back from ``target`` must equal ``want``."""
    fd = os.open(target, os.O_RDONLY)
    try:
        drop_cache(fd)
        h = hashlib.sha256()
        with meter("verify", length) as bar:
            for chunk in _read_range(fd, 0, length, target):
                h.update(chunk)
                bar.advance(len(chunk))
    finally:
        os.close(fd)
    if h.hexdigest() != want:
        raise UserError(str(target), "read-back SHA-256 differs from the image",
                        hint="the card may be failing or fake; try another card")


def _read_range(fd: int, offset: int, length: int, target: Path) -> Iterator[bytes]:
    """Chunks of [offset, offset+length); the next chunk is read while the caller hashes this one."""
    end = offset + length
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(os.pread, fd, min(CHUNK, end - offset), offset)
        while offset < end:
            chunk = pending.result()
            if not chunk:
                raise UserError(str(target), f"ends at byte {offset}, before the image does", hint="use a larger card")
            offset += len(chunk)
            if offset < end:
                pending = reader.submit(os.pread, fd, min(CHUNK, end - offset), offset)
            yield chunk
