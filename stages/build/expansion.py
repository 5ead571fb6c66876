"""First-boot expansion (image.expand): what grows the root partition to the card.

A card is usually larger than the image: something must grow the root partition at the
first boot. Raspberry Pi OS bookworm does it in its `init=` first-boot script (kept: entropi
only diverts its key step); trixie in its initramfs when cmdline.txt holds `resize`
(raspberrypi-sys-mods' resize_early, then rpi-resize.service grows the file system), also
kept. Images without any such mechanism get entropi-growroot. Which one
the image has is recorded in the manifest (Shrink warns when there is none).
"""

from __future__ import annotations

import re

from stages.build.firstboot_unit import install
from stages.core.errors import UserError
from stages.core.paths import FIRSTBOOT
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image import units
from stages.image.guest_files import read_text
from stages.image.handle import GuestHandle

INIT_EXPANDERS = {
    "init=/usr/lib/raspberrypi-sys-mods/firstboot": "raspberrypi-sys-mods firstboot (init= in cmdline.txt)",
    "init=/usr/lib/raspi-config/init_resize.sh": "raspi-config init_resize.sh (init= in cmdline.txt)",
}
UNIT_EXPANDERS = ["rpi-resizerootfs.service", "entropi-growroot.service"]
# Raspberry Pi OS trixie: `resize` in cmdline.txt, handled by an initramfs-tools script.
RESIZE_TOKEN = "resize"
RESIZE_SCRIPTS = ["/usr/share/initramfs-tools/scripts/local-premount/resize*",
                  "/etc/initramfs-tools/scripts/local-premount/resize*"]
RESIZE_FS_UNIT = "rpi-resize.service"
INITRAMFS_RESIZE = "initramfs resize (`resize` in cmdline.txt)"  # the manifest's name for it (boot test: check 11)
GROWROOT = "/usr/lib/entropi/entropi-growroot"
GROWROOT_UNIT = "entropi-growroot.service"


def first_boot_expansion(g: GuestHandle, boot_mount: str) -> str | None:
    """The mechanism that grows the root partition at the image's first boot, or None."""
    cmdline = read_text(g, f"{boot_mount}/cmdline.txt")
    for word, name in INIT_EXPANDERS.items():
        if re.search(rf"(^|\s){re.escape(word)}(\s|$)", cmdline):
            return name
    if RESIZE_TOKEN in cmdline.split() and any(g.glob_expand(p) for p in RESIZE_SCRIPTS):
        grow_fs = RESIZE_FS_UNIT if units.is_enabled(g, RESIZE_FS_UNIT) else "no file system grow unit enabled"
        return f"{INITRAMFS_RESIZE} + {grow_fs}"
    for unit in UNIT_EXPANDERS:
        if g.glob_expand(f"{units.ETC}/*.wants/{unit}") or g.glob_expand(f"{units.ETC}/*.requires/{unit}"):
            return unit
    if g.glob_expand("/etc/rc[S2345].d/S*resize2fs_once"):
        return "resize2fs_once (SysV)"
    return None


class Expansion(Stage):
    """Find the image's own first-boot expansion; without one, install entropi-growroot."""

    name = "first-boot expansion"
    reads = frozenset({"g", "boot_mount"})
    provides = frozenset({"expansion"})

    def check(self, ctx: Context) -> None:
        for name in ("entropi-growroot", GROWROOT_UNIT):
            if ctx.config.image.expand == "auto" and not (FIRSTBOOT / name).is_file():
                raise UserError(str(FIRSTBOOT), f"{name} is missing", hint="restore firstboot/ from git")

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        found = first_boot_expansion(g, need(ctx.state.boot_mount, "boot_mount"))
        if found is None and ctx.config.image.expand == "auto":
            g.mkdir_p("/usr/lib/entropi")
            install(g, "entropi-growroot", GROWROOT, 0o755)
            install(g, GROWROOT_UNIT, f"/etc/systemd/system/{GROWROOT_UNIT}", 0o644)
            units.enable(g, GROWROOT_UNIT)
            found = GROWROOT_UNIT
        ctx.state.expansion = found
        ctx.record("image", "first_boot_expansion", found)
