"""Open and check the work copy; mount its root file system on the host for the ARM chroot.

Checks: MBR, a FAT boot partition holding config.txt and cmdline.txt, an ext4 root with
/etc/os-release. Detects the boot mount point, the architecture, the Debian release and
the kernel versions (recorded in the manifest). The root is loop-mounted by offset (only
ext4: the host has no vfat) and always unmounted in teardown.
"""

from __future__ import annotations

import subprocess

from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.processes import run
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.disk import attach_partition, detach_loop, fat_list, read_mbr
from stages.image.guest import Launch
from stages.image.rootfs import detect_arch, detect_boot_mount, os_release


class OpenImage(Stage):
    name = "open"
    reads = frozenset({"image", "grown"})
    provides = frozenset({"mbr", "loop", "root", "arch", "boot_mount", "kernels", "release", "guest_launch"})

    def tools(self, config: Config) -> list[str]:
        return ["losetup", "blkid", "mount", "umount", "e2fsck", "resize2fs", "mdir"]

    def run(self, ctx: Context) -> None:
        image = need(ctx.state.image, "image")
        mbr = read_mbr(image)
        if len(mbr.partitions) < 2:
            raise UserError(str(image), f"{len(mbr.partitions)} partition(s); expected a FAT boot and an ext4 root",
                            hint="use a Raspberry Pi OS image (p1 bootfs, p2 rootfs)")
        boot, rootp = mbr.partitions[0], mbr.partitions[1]
        if not boot.is_fat:
            raise UserError(str(image), "partition 1 is not FAT", hint="a Raspberry Pi image has p1 FAT32 'bootfs'")
        names = set(fat_list(image, boot))
        for needed in ("config.txt", "cmdline.txt"):
            if needed not in names:
                raise UserError(str(image), f"the boot partition has no {needed}", hint="is this a Raspberry Pi image?")
        ctx.state.mbr = mbr
        loop = attach_partition(image, rootp)
        ctx.state.loop = loop
        fstype = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", loop], capture_output=True, text=True).stdout
        if fstype.strip() != "ext4":
            raise UserError(str(image), f"partition 2 is {fstype.strip() or 'not a file system'}, not ext4",
                            hint="the root file system must be ext4")
        if ctx.state.grown:
            run(["e2fsck", "-fy", loop], check=False)
            run(["resize2fs", loop], hint="could not grow the root file system")
        root = ctx.work_dir / "root"
        root.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "ext4", loop, str(root)])
        ctx.state.root = root
        if not (root / "etc" / "os-release").exists() and not (root / "usr/lib/os-release").exists():
            raise UserError(str(image), "the root file system has no /etc/os-release", hint="is this a Linux image?")
        release = os_release(root)
        arch = detect_arch(root)
        boot_mount = detect_boot_mount(root)
        modules = root / "lib" / "modules"
        kernels = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
        ctx.state.arch, ctx.state.boot_mount, ctx.state.kernels, ctx.state.release = arch, boot_mount, kernels, release
        ctx.record("image", "arch", arch)
        ctx.record("image", "boot_mount", boot_mount)
        ctx.record("image", "release", release.get("VERSION_CODENAME", release.get("VERSION_ID", "unknown")))
        ctx.record("image", "pretty_name", release.get("PRETTY_NAME", ""))
        ctx.record("image", "kernels", kernels)
        ctx.record("image", "disk_id", mbr.disk_id)
        # Boot the libguestfs appliance now, beside the package step (about 10-20 s under TCG).
        ctx.state.guest_launch = Launch([(image, "raw", False)], where=str(image))

    def teardown(self, ctx: Context) -> None:
        launch, ctx.state.guest_launch = ctx.state.guest_launch, None
        if launch is not None:
            launch.close()
        unmount_root(ctx)


def unmount_root(ctx: Context) -> None:
    """Unmount the host-side root and free its loop device (safe to call twice)."""
    root, ctx.state.root = ctx.state.root, None
    if root is not None:
        subprocess.run(["umount", str(root)], capture_output=True, check=False)
    loop, ctx.state.loop = ctx.state.loop, None
    detach_loop(loop)
