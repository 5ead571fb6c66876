"""What QEMU boots: kernel, initramfs and device tree from the image's own boot partition
(config.txt's ``kernel=`` and ``initramfs``), and its command line adapted for QEMU without
changing the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import UserError
from stages.core.processes import run
from stages.image.disk import Mbr, Partition, fat_copy_out, fat_list, fat_read, read_mbr

DTBS = {
    "arm64": ["bcm2710-rpi-3-b.dtb", "bcm2837-rpi-3-b.dtb"],
    "armhf": ["bcm2709-rpi-2-b.dtb", "bcm2836-rpi-2-b.dtb"],
}
DEFAULT_KERNEL = {"arm64": "kernel8.img", "armhf": "kernel7.img"}
@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path | None
    dtb: Path
    cmdline: str
    boot_part: Partition


BOARD_SECTIONS = {"arm64": ("[all]", "[pi3]"), "armhf": ("[all]", "[pi2]")}


def parse_config_txt(text: str, arch: str) -> tuple[str | None, str | None]:
    """kernel= and initramfs from the parts of config.txt that apply to QEMU's board."""
    kernel = initrd = None
    active = True
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            active = line in BOARD_SECTIONS[arch]
            continue
        if not active:
            continue
        if line.startswith("kernel="):
            kernel = line.split("=", 1)[1].strip()
        elif line.startswith("initramfs "):
            initrd = line.split()[1]
    return kernel, initrd


# Kernel options the boot test adds per board, never written to the image.
# armhf, rodata=off: the ARMv7 kernel invalidates a kernel address range one page at a time
# with broadcast TLB operations (no whole-TLB cut-off, unlike arm64), and it does so for every
# module section it makes read-only or non-executable and for every init section it frees.
# Under QEMU's multi-threaded TCG each broadcast invalidation stops all running vCPU threads;
# with 4 guest cores on 2 host cores each stop waits for the host scheduler, so a range of a
# few thousand pages stalls the whole guest for tens of seconds (kernel log: RCU stall with
# a CPU in v7wbi_flush_kern_tlb_range, called from do_free_init or bpf_prog_free_deferred).
# The SD host driver's 10 s software timeout then fires mid-transfer and its timeout path
# oopses: the "sd-host-timeout" fault. Without the read-only marking there are no such
# ranges to invalidate. Measured here on the armhf base: README "Boots under emulation".
# The kernel's own text and module protection is not what the boot test checks.
BOARD_KERNEL_ARGS = {"arm64": [], "armhf": ["rodata=off"]}


def qemu_cmdline(original: str, arch: str) -> str:
    """The image's cmdline.txt adapted for QEMU: serial console, predictable net names, BOARD_KERNEL_ARGS."""
    added = BOARD_KERNEL_ARGS[arch]
    dropped = ("console=", "net.ifnames=", "quiet", "splash", "plymouth.", *(a.split("=")[0] + "=" for a in added))
    keep = [w for w in original.split() if not w.startswith(dropped)]
    # QEMU's usb-net offers CDC Ethernet and a "Linux Device" interface; when cdc_subset wins
    # the race for it the link stays dead, so only cdc_ether may bind (boot-time option only).
    return " ".join([*keep, "console=ttyAMA0,115200", "net.ifnames=0", "modprobe.blacklist=cdc_subset", *added])


def extract_boot_files(image: Path, arch: str, work: Path) -> BootFiles:
    """Copy kernel, initramfs and device tree out of the image's FAT partition."""
    mbr = read_mbr(image)
    boot = next((p for p in mbr.partitions if p.is_fat), None)
    if boot is None:
        raise UserError(str(image), "no FAT boot partition", hint="a Raspberry Pi image has p1 FAT32 'bootfs'")
    config = fat_read(image, boot, "config.txt").decode(errors="replace")
    cmdline = fat_read(image, boot, "cmdline.txt").decode(errors="replace").strip()
    kernel_name, initrd_name = parse_config_txt(config, arch)
    names = set(fat_list(image, boot))
    kernel_name = kernel_name or DEFAULT_KERNEL[arch]
    if kernel_name not in names:
        raise UserError(str(image), f"config.txt names kernel {kernel_name!r}, not on the boot partition",
                        hint="check kernel= in config.txt")
    dtb_name = next((d for d in DTBS[arch] if d in names), None)
    if dtb_name is None:
        raise UserError(str(image), f"no device tree for QEMU ({' or '.join(DTBS[arch])})",
                        hint="the boot partition must carry the Broadcom device trees")
    work.mkdir(parents=True, exist_ok=True)
    kernel, dtb = work / "kernel", work / "board.dtb"
    fat_copy_out(image, boot, kernel_name, kernel)
    fat_copy_out(image, boot, dtb_name, dtb)
    initrd = None
    if initrd_name and initrd_name in names:
        initrd = work / "initrd"
        fat_copy_out(image, boot, initrd_name, initrd)
    return BootFiles(kernel, initrd, dtb, qemu_cmdline(cmdline, arch), boot)


def dd_block(boot: Partition) -> int:
    """The largest power-of-two block, at most 4 MiB, that divides the partition's start and size:
    qemu-img dd copies a block at a time (a 512 MiB boot partition: 20 s in 512-byte blocks, 2.5 s
    in 4 MiB ones)."""
    block = 4 << 20
    while block > 512 and (boot.start % block or boot.size % block):
        block //= 2
    return block


def card_boot_file(disk: Path, boot: Partition, name: str) -> bytes | None:
    """A file of the card's boot partition as the card (qcow2 ``disk``) holds it now; None if absent."""
    fat = disk.with_name(disk.name + ".bootfs")
    block = dd_block(boot)
    try:
        run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", f"bs={block}", f"skip={boot.start // block}",
             f"count={boot.size // block}", f"if={disk}", f"of={fat}"],
            hint="qemu-img (qemu-utils) reads the card's boot partition; run ./ci/setup")
        return fat_read(fat, Partition(boot.number, boot.type_id, 0, boot.size), name)
    except UserError:
        return None
    finally:
        fat.unlink(missing_ok=True)


def card_mbr(disk: Path) -> Mbr:
    """The card's (qcow2 ``disk``) partition table and disk identifier as it holds them now."""
    head = disk.with_name(disk.name + ".mbr")
    try:
        run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1", f"if={disk}", f"of={head}"],
            hint="qemu-img (qemu-utils) reads the card's partition table; run ./ci/setup")
        return read_mbr(head)
    finally:
        head.unlink(missing_ok=True)


def card_cmdline(disk: Path, boot: Partition, arch: str) -> str:
    """cmdline.txt as the card holds it now, adapted for QEMU, as the firmware reads it at every
    power-on. A first boot may rewrite it (Raspberry Pi OS trixie's initramfs resize gives the
    disk a new identifier and puts the new root=PARTUUID= there)."""
    text = card_boot_file(disk, boot, "cmdline.txt")
    if text is None:
        raise UserError(str(disk), "the card's boot partition has no readable cmdline.txt",
                        hint="a Raspberry Pi image keeps cmdline.txt on its FAT boot partition")
    return qemu_cmdline(text.decode(errors="replace").strip(), arch)
