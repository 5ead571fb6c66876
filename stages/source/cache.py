"""The download cache, content-addressed by the download's published SHA-256, under cache_dir():

    downloads/<sha256>/<name>.img.xz          the download, renamed here once verified
    downloads/<sha256>/<name>.img.xz.part     an unfinished download (resumed next time)
    downloads/<sha256>/<name>.img             the unpacked image, renamed here once whole
    downloads/<sha256>/<file>.json            sidecar: size, mtime, SHA-256, signer
    downloads/rejected/<time>-<name>          files that failed a check (never used)
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.core import progress
from stages.core.files import cache_dir, sha256_file

KEEP_REJECTED = 3


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.with_name(path.name + ".json").read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_sidecar(path: Path, sha256: str, signer: str) -> None:
    st = path.stat()
    side = path.with_name(path.name + ".json")
    tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256, "signer": signer}))
    os.replace(tmp, side)


def cached_digest(path: Path, full: bool, want: str) -> str | None:
    """The digest of a cached file if it is intact (cheap: size+mtime; full: hash), else None.

    A cached file that fails is moved to rejected/ so that it is fetched or unpacked again.
    """
    if not path.exists():
        return None
    side = read_sidecar(path)
    st = path.stat()
    ok = side is not None and side.get("size") == st.st_size and side.get("mtime_ns") == st.st_mtime_ns
    digest = str(side.get("sha256", "")) if side else ""
    if ok and want and digest != want:
        ok = False
    if ok and full:
        with progress.step(f"verify {path.name}"):
            ok = sha256_file(path) == digest
    if ok:
        return digest
    progress.warn(f"cached {path.name} is damaged or unfinished; fetching it again")
    reject(path)
    return None


def rejected_dir() -> Path:
    return cache_dir() / "downloads" / "rejected"


def reject(path: Path) -> None:
    """Move a file that failed a check out of the cache's way (keeping the last few for a look)."""
    target = rejected_dir()
    target.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, target / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{path.name}")
    path.with_name(path.name + ".json").unlink(missing_ok=True)
    old = sorted(target.iterdir(), key=lambda q: q.stat().st_mtime)
    for q in old[:-KEEP_REJECTED]:
        q.unlink(missing_ok=True)


@contextmanager
def locked(lock: Path, what: str = "fetching the same image") -> Iterator[None]:
    """Hold ``lock`` (flock) for the block; says so when another entropi holds it and waits."""
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.info(f"waiting for another entropi that is {what} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
