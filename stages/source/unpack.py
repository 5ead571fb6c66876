"""Unpack a downloaded image (.xz, .gz, .bz2, .zst, .zip) into a raw .img, streaming.

The decompressor runs as a child (``xz -T0`` is multi-threaded); this process reads its
output through a large pipe, hashes it on a second thread and writes it sparsely (runs of
zeros become holes). The result appears under its final name only when whole and, when the
catalogue gives them, only with the expected size and SHA-256.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from stages.core import progress
from stages.core.errors import UserError
from stages.core.files import atomic_output
from stages.core.processes import forget, spawn
from stages.source.compression import TOOLS, OutOfSpace, kind_of, stream_size, write_hashed

CHUNK = 1 << 20


class DamagedArchive(UserError):
    """The compressed file itself is bad (truncated, corrupt, no or several images in a zip)."""


def unpack(src: Path, dest: Path, *, where: str, key: str, size: int | None = None,
           sha256: str = "") -> tuple[int, str]:
    """Decompress ``src`` into ``dest`` (renamed into place when whole). Returns (bytes, SHA-256).

    Raises DamagedArchive when ``src`` is bad, UserError when the disk is full or the result
    differs from the expected ``size`` / ``sha256``.
    """
    kind = kind_of(src)
    if kind is None:
        raise DamagedArchive(where, f"{src.name} is not a compressed image", key=key)
    if size is None:
        size = stream_size(src, kind)
    with atomic_output(dest) as tmp:
        if kind == "zip":
            with _zip_member(src, where, key) as (stream, member_size):
                written, digest = _write(stream, tmp, size or member_size, dest, where, key)
        else:
            written, digest = _run_tool(kind, src, tmp, size, dest, where, key)
        if size is not None and written != size:
            raise UserError(where, f"{src.name} unpacks to {written} bytes, expected {size}", key=key,
                            hint="the catalogue entry and the image disagree; report it or pin base.url + base.sha256")
        if sha256 and digest != sha256:
            raise UserError(where, f"SHA-256 mismatch for the unpacked {dest.name}: expected {sha256}, got {digest}",
                            key=key, hint="the catalogue's extract_sha256 and the image disagree")
    return written, digest


class _zip_member:  # a context manager used like a function
    def __init__(self, src: Path, where: str, key: str) -> None:
        self.src, self.where, self.key = src, where, key
        self.zf: zipfile.ZipFile | None = None

    def __enter__(self) -> tuple[Iterator[bytes], int]:
        try:
            self.zf = zipfile.ZipFile(self.src)
        except (zipfile.BadZipFile, OSError) as e:
            raise DamagedArchive(self.where, f"{self.src.name} is not a readable zip: {e}", key=self.key,
                                 hint="the download is damaged; run again") from None
        images = [i for i in self.zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".img")]
        if len(images) != 1:
            names = ", ".join(i.filename for i in images) or "none"
            raise DamagedArchive(self.where, f"{self.src.name} must hold exactly one .img, it holds "
                                 f"{len(images)} ({names})", key=self.key,
                                 hint="point the recipe at an image archive, or unpack it and use base.path")
        member = self.zf.open(images[0])

        def chunks() -> Iterator[bytes]:
            try:
                while chunk := member.read(CHUNK):
                    yield chunk
            except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
                if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                    raise
                raise DamagedArchive(self.where, f"{self.src.name} is damaged: {e}", key=self.key,
                                     hint="the download is damaged; run again") from None

        return chunks(), images[0].file_size

    def __exit__(self, *exc: object) -> None:
        if self.zf is not None:
            self.zf.close()


def _run_tool(kind: str, src: Path, tmp: Path, size: int | None, dest: Path, where: str,
              key: str) -> tuple[int, str]:
    """The decompressor writes the file itself (sparse, no pipe copies); we hash behind it as it grows."""
    argv = [*TOOLS[kind], str(src)]
    if shutil.which(argv[0]) is None:
        raise UserError(where, f"{argv[0]} is needed to unpack {src.name}", key=key, hint="run ./ci/setup")
    with tempfile.TemporaryFile() as err, open(tmp, "wb") as out:
        proc = spawn(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            written, digest = _hash_behind(tmp, proc, size, dest)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            forget(proc)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
        if code == 0:
            try:
                os.fsync(out.fileno())  # the cache trusts it after the rename: its bytes must be on disk
            except OSError as e:
                raise _disk_full(e, tmp, dest, written, size, where, key) from None
            return written, digest
    msg = (lines[-1] if lines else f"exit status {code}").replace(str(src) + ": ", "").removeprefix(f"{argv[0]}: ")
    if "No space left" in msg or "Disk quota" in msg:
        raise _disk_full(OSError(errno.ENOSPC, msg), tmp, dest, written, size, where, key)
    raise DamagedArchive(where, f"{src.name} is damaged: {argv[0]}: {msg}", key=key,
                         hint="the file is truncated or corrupt; run again to download it afresh")


def _hash_behind(path: Path, proc: subprocess.Popen[bytes], size: int | None, dest: Path) -> tuple[int, str]:
    """SHA-256 of ``path`` read while ``proc`` writes it (holes read as zeros), until ``proc`` ends."""
    h = hashlib.sha256()
    pos = 0
    buf = bytearray(4 * CHUNK)
    view = memoryview(buf)
    with progress.bytes_bar(f"unpack {dest.name}", size) as bar, open(path, "rb", buffering=0) as f:
        task = bar.add_task("unpack", total=size)
        while True:
            done = proc.poll() is not None  # read after the end is seen, so the tail is not missed
            n = f.readinto(buf) or 0
            if n:
                h.update(view[:n])
                pos += n
                bar.advance(task, n)
            elif done:
                return pos, h.hexdigest()
            else:
                time.sleep(0.005)


def _write(chunks: Iterator[bytes], tmp: Path, size: int | None, dest: Path, where: str,
           key: str) -> tuple[int, str]:
    try:
        with progress.bytes_bar(f"unpack {dest.name}", size) as bar, open(tmp, "wb") as f:
            task = bar.add_task("unpack", total=size)
            written, _, digest = write_hashed(chunks, f.fileno(), sparse=True, advance=lambda n: bar.advance(task, n))
    except OutOfSpace as e:
        raise _disk_full(e.error, tmp, dest, e.written, size, where, key) from None
    return written, digest


def _disk_full(e: OSError, tmp: Path, dest: Path, written: int, size: int | None, where: str, key: str) -> Exception:
    """ENOSPC as a UserError; any other OSError as it is."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return e
    free = shutil.disk_usage(tmp.parent).free
    need = f"; it needs {size} bytes" if size else ""
    return UserError(where, f"no space left in {tmp.parent} while unpacking {dest.name} after {written} "
                     f"bytes ({free} bytes free{need})", key=key,
                     hint="free some space there, or point ENTROPI_CACHE at a larger disk")
