"""Files: sparse-aware hashing, the cache directory, outputs under temporary names, removal, plain writes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: str | Path, bufsize: int = 4 << 20) -> str:
    """SHA-256 of a file; holes of a sparse file are hashed as zeros without reading them."""
    h = hashlib.sha256()
    zeros = memoryview(bytes(bufsize))
    buf = memoryview(bytearray(bufsize))
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole up to the end
                data = size
            while pos < data:
                n = min(bufsize, data - pos)
                h.update(zeros[:n])
                pos += n
            hole = os.lseek(fd, pos, os.SEEK_HOLE) if pos < size else size
            f.seek(pos)
            while pos < hole:
                n = f.readinto(buf[:min(bufsize, hole - pos)])
                if not n:  # the file shrank while being read
                    raise OSError(f"{path}: unexpected end of file at byte {pos}")
                h.update(buf[:n])
                pos += n
    return h.hexdigest()


def cache_dir() -> Path:
    """The cache outside the repo (base images, downloads): $ENTROPI_CACHE or ~/.cache/entropi."""
    return Path(os.environ.get("ENTROPI_CACHE", Path.home() / ".cache" / "entropi"))


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything mounted below ``path`` (an interrupted chroot)."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def tmp_name(final: Path) -> Path:
    """The temporary name an output is written under until it is whole."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` only if the block succeeds."""
    tmp = tmp_name(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` with ``mode``, making the parent directories (image trees being built)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
