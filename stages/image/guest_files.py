"""Open the work copy with libguestfs (one handle for all file edits) and close it.

The appliance is started early, in the background (OpenImage starts it while the
qemu-user package step runs on the host mount); before the handle mounts anything, the
host-side root mount is released and the appliance's block-device caches are dropped.
"""

from __future__ import annotations

from pathlib import Path

from stages.build.open_image import unmount_root
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.guest import accel, appliance_setup, open_guest
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


class EditOpen(Stage):
    name = "open libguestfs"
    reads = frozenset({"image", "boot_mount", "guest_launch", "root", "loop"})
    provides = frozenset({"g"})

    def run(self, ctx: Context) -> None:
        unmount_root(ctx)
        image = need(ctx.state.image, "image")
        launch, ctx.state.guest_launch = ctx.state.guest_launch, None
        g = launch.handle() if launch else open_guest([(image, "raw", False)], where=str(image))
        ctx.state.g = g
        ctx.record("image", "guestfs_accel", accel())
        ctx.record("image", "guestfs_kernel", appliance_setup())
        g.mount("/dev/sda2", "/")
        g.mount("/dev/sda1", need(ctx.state.boot_mount, "boot_mount"))

    def teardown(self, ctx: Context) -> None:
        close_guest(ctx)


def close_guest(ctx: Context) -> None:
    g, ctx.state.g = ctx.state.g, None
    if g is None:
        return
    try:
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


class EditClose(Stage):
    """Flush and close the handle: everything after works on a finished file."""

    name = "close libguestfs"
    reads = frozenset({"g"})

    def run(self, ctx: Context) -> None:
        close_guest(ctx)
