"""Files inside the image through the libguestfs handle: read, write, copy in from the host."""

from __future__ import annotations

from pathlib import Path

from stages.image.handle import GuestHandle

# libguestfs's file-transfer calls (read_file, cat, upload, download) cost ~0.2 s each under
# TCG; pread and write are plain daemon calls (~2 ms) but carry at most a few MiB each.
CHUNK = 1 << 20


def read_bytes(g: GuestHandle, path: str) -> bytes:
    """A file's bytes, in CHUNK-sized preads."""
    size = g.filesize(path)
    parts = [bytes(g.pread(path, CHUNK, offset)) for offset in range(0, size, CHUNK)]
    return b"".join(parts)


def read_text(g: GuestHandle, path: str) -> str:
    return read_bytes(g, path).decode("utf-8", errors="surrogateescape")


def put_file(g: GuestHandle, src: Path, dest: str, mode: int | None = None) -> None:
    """Copy a host file into the image (write for small files, upload for big ones)."""
    if src.stat().st_size <= CHUNK:
        g.write(dest, src.read_bytes())
    else:
        g.upload(str(src), dest)
    if mode is not None:
        g.chmod(mode, dest)


def write_text(g: GuestHandle, path: str, content: str, mode: int | None = None) -> None:
    g.write(path, content.encode("utf-8", errors="surrogateescape"))
    if mode is not None:
        g.chmod(mode, path)
