"""First-boot expansion (image.expand) and shrink (image.shrink).

A card is usually larger than the image: something must grow the root partition at the
first boot. Raspberry Pi OS does it in its `init=` first-boot script (kept: entropi only
diverts its key step); images without any such mechanism get entropi-growroot.

Shrink: the root file system is checked and shrunk with resize2fs to its minimum plus
``image.shrink_free``, partition 2 is cut to match (pyparted, the disk identifier kept) and
the file is truncated at its end. The image's own first-boot expansion is left in place,
so a card still grows to its full size at the first boot; which one the image has is
recorded in the manifest, and an image without one gets a warning.
"""

from __future__ import annotations

import re

from stages.build.firstboot_unit import install
from stages.build.work_copy import require_parted, set_root_partition_end
from stages.core import progress
from stages.core.config import Config, parse_size
from stages.core.errors import UserError
from stages.core.paths import FIRSTBOOT
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.core.util import run, text
from stages.image import units
from stages.image.disk import attach_partition, detach_loop, read_mbr
from stages.image.guest_files import read_text
from stages.image.handle import GuestHandle

MIB = 1 << 20
INIT_EXPANDERS = {
    "init=/usr/lib/raspberrypi-sys-mods/firstboot": "raspberrypi-sys-mods firstboot (init= in cmdline.txt)",
    "init=/usr/lib/raspi-config/init_resize.sh": "raspi-config init_resize.sh (init= in cmdline.txt)",
}
UNIT_EXPANDERS = ["rpi-resizerootfs.service", "entropi-growroot.service"]
GROWROOT = "/usr/lib/entropi/entropi-growroot"
GROWROOT_UNIT = "entropi-growroot.service"


def first_boot_expansion(g: GuestHandle, boot_mount: str) -> str | None:
    """The mechanism that grows the root partition at the image's first boot, or None."""
    cmdline = read_text(g, f"{boot_mount}/cmdline.txt")
    for word, name in INIT_EXPANDERS.items():
        if re.search(rf"(^|\s){re.escape(word)}(\s|$)", cmdline):
            return name
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


def fs_geometry(device: str) -> tuple[int, int]:
    """(block count, block size) of the ext4 file system on ``device``."""
    head = text(["dumpe2fs", "-h", device])
    fields = dict(re.findall(r"^(Block count|Block size):\s+(\d+)$", head, re.M))
    return int(fields["Block count"]), int(fields["Block size"])


def minimum_blocks(device: str) -> int:
    out = text(["resize2fs", "-P", device])
    m = re.search(r"minimum size of the filesystem:\s*(\d+)", out)
    if not m:
        raise UserError(device, f"resize2fs -P gave no minimum size: {out.strip()!r}", hint="run e2fsck -f on it")
    return int(m.group(1))


class Shrink(Stage):
    name = "shrink"
    reads = frozenset({"image", "expansion"})
    provides = frozenset({"shrink_loop"})

    def skip(self, config: Config) -> str | None:
        return None if config.image.shrink else "image.shrink is false"

    def tools(self, config: Config) -> list[str]:
        return ["losetup", "e2fsck", "resize2fs", "dumpe2fs"]

    def check(self, ctx: Context) -> None:
        require_parted("image.shrink")

    def run(self, ctx: Context) -> None:
        image = need(ctx.state.image, "image")
        mbr = read_mbr(image)
        rootp = mbr.partitions[1]
        if any(p.start > rootp.start for p in mbr.partitions[2:]):
            raise UserError(str(image), "partition 2 is not the last partition, so the file cannot end with it",
                            key="image.shrink", hint="set image.shrink = false for this image")
        before = image.stat().st_size
        loop = attach_partition(image, rootp)
        ctx.state.shrink_loop = loop
        with progress.step("check the root file system"):
            done = run(["e2fsck", "-fy", loop], check=False)
            if done.returncode >= 4:
                raise UserError(str(image), f"e2fsck found errors it could not fix (exit {done.returncode})",
                                key="image.shrink", hint="the root file system is damaged; build from a good base")
        expansion = ctx.state.expansion
        if expansion is None:
            progress.warn("image.shrink: the image has no first-boot expansion (image.expand = \"none\"); "
                          "a card keeps the shrunk root size")
        blocks, block_size = fs_geometry(loop)
        free = parse_size(ctx.config.image.shrink_free) if ctx.config.image.shrink_free else 0
        target = min(blocks, minimum_blocks(loop) + -(-free // block_size))
        target -= target % (MIB // block_size)  # whole MiB, so the partition end stays aligned
        if target < blocks:
            with progress.step(f"resize2fs to {target * block_size / MIB:.0f} MiB"):
                run(["resize2fs", loop, str(target)], hint="could not shrink the root file system")
        self.teardown(ctx)
        set_root_partition_end(image, target * block_size)
        ctx.record("image", "shrink", {"file_bytes_before": before, "file_bytes_after": image.stat().st_size,
                                       "root_fs_bytes": target * block_size})

    def teardown(self, ctx: Context) -> None:
        loop, ctx.state.shrink_loop = ctx.state.shrink_loop, None
        detach_loop(loop)
