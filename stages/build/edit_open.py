"""Open the work copy with libguestfs: one handle for all file edits (closed by EditClose).

The appliance is started early, in the background (OpenImage starts it while the
qemu-user package step runs on the host mount); before the handle mounts anything, the
host-side root mount is released and the appliance's block-device caches are dropped.
"""

from __future__ import annotations

from stages.build.open_image import unmount_root
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.guest import accel, appliance_setup, open_guest


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
