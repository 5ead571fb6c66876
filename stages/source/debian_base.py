"""Pi-style base images built from Debian packages (offline base and test fixture).

mmdebstrap (qemu-user for the foreign architecture) makes the root tree; it is laid into
a raw image shaped like Raspberry Pi OS: MBR with a disk identifier, p1 FAT32 `bootfs`
(512 MiB, built with mtools: no FAT mount on the host), p2 ext4 `rootfs` (mkfs.ext4 -d).
The bookworm image keeps what makes real images dangerous (pre-baked SSH host keys, a random
seed, a populated machine-id, Raspberry Pi OS's regenerate_ssh_host_keys.service) so that the
pipeline's handling of each is tested; trixie is shaped like today's Raspberry Pi OS
(trixie_shape.py: cloud-init, the initramfs resize, first-boot key makers). Cached in
~/.cache/entropi/base/ by a hash of everything that shaped it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stages.core import progress
from stages.core.errors import UserError
from stages.core.files import atomic_output, cache_dir, remove_tree, sha256_file
from stages.core.files import write_file as _write
from stages.core.processes import run, text
from stages.core.runner import require_tools
from stages.image.chroot import require_binfmt
from stages.source import bookworm_shape, deferred, trixie_shape
from stages.source.cache import locked

FORMAT = 4  # bump whenever the build below changes what lands in the image
BOOT_MIB = 512
BOOT_START_MIB = 4
COMMON = [
    "systemd-sysv", "dbus", "udev", "kmod", "libpam-systemd", "openssh-server", "python3", "sudo",
    "iproute2", "netbase", "zstd", "e2fsprogs", "initramfs-tools", "raspi-firmware", "procps", "less",
]
KERNEL = {"arm64": "linux-image-arm64", "armhf": "linux-image-armmp"}
# Only what the initramfs needs to find an SD card root: one mkinitramfs run, MODULES=list.
INITRD_MODULES = ["sdhci-iproc", "bcm2835", "mmc_block", "ext4"]
# arm64 also boots under QEMU's `-M virt` (the TPM boot test: swtpm and virtio-rng next to
# each other): root on virtio-blk over virtio-mmio; virtio-rng in the initramfs so that it
# registers before any TPM, as the SoC's built-in RNG does on a Pi.
VIRT_MODULES = {"arm64": ["virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng"], "armhf": []}


def initrd_modules(arch: str) -> list[str]:
    """The initramfs's module list (MODULES=list) for ``arch``."""
    return [*INITRD_MODULES, *VIRT_MODULES[arch]]

DTB = {"arm64": "bcm2837-rpi-3-b.dtb", "armhf": "bcm2836-rpi-2-b.dtb"}
BUILD_TOOLS = ("mmdebstrap", "mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk", "openssl")

REGENERATOR_UNIT = """\
[Unit]
Description=Regenerate SSH host keys
Before=ssh.service
ConditionFileIsExecutable=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""
REGENERATOR_SCRIPT = """\
#!/bin/sh -e
rm -f /etc/ssh/ssh_host_*_key*
ssh-keygen -A > /dev/null
systemctl -q disable regenerate_ssh_host_keys
"""


@dataclass(frozen=True)
class BaseSpec:
    """What shapes a Debian-built base image."""

    arch: str = "arm64"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"

    @property
    def pi_trixie(self) -> bool:
        """trixie: shaped like today's Raspberry Pi OS (cloud-init, initramfs resize; trixie_shape.py)."""
        return self.suite == "trixie"

    @property
    def boot_mount(self) -> str:
        """arm64 and trixie: /boot/firmware (today's Raspberry Pi OS); armhf bookworm: /boot (2015-era Raspbian)."""
        return "/boot/firmware" if self.arch == "arm64" or self.pi_trixie else "/boot"

    @property
    def boot_start_mib(self) -> int:
        return trixie_shape.BOOT_START_MIB if self.pi_trixie else BOOT_START_MIB

    @property
    def packages(self) -> list[str]:
        return [*COMMON, KERNEL[self.arch], *(trixie_shape.PACKAGES if self.pi_trixie else [])]

    def key(self) -> str:
        shaping = {
            "spec": asdict(self), "format": FORMAT, "packages": [*COMMON, KERNEL[self.arch]],
            "modules": initrd_modules(self.arch), "config_txt": config_txt(self, "KVER"),
            "units": [REGENERATOR_UNIT, bookworm_shape.NETWORK],
        }
        if self.pi_trixie:  # only here, so that the bookworm bases keep their keys (and caches)
            shaping["pi_trixie"] = {"packages": self.packages, "files": trixie_shape.files(),
                                    "cmdline": trixie_shape.cmdline("ID"), "shape": trixie_shape.SHAPE_VERSION}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()

    def path(self) -> Path:
        return cache_dir() / "base" / f"debian-{self.suite}-{self.arch}-{self.key()[:12]}.img"

    def disk_id(self) -> str:
        return self.key()[:8]


def sidecar(image: Path) -> Path:
    """What built a cached base image: spec, hash key, SHA-256, package versions."""
    return image.with_name(image.name + ".json")


def ensure_base(spec: BaseSpec) -> Path:
    """Return the cached base image for ``spec``, building it first when missing. Two entropis that
    want the same base (a CI job building it ahead of the tests) build it once: the second waits."""
    final = spec.path()
    if final.exists():
        progress.info(f"base image (cached): {final}")
        return final
    require_tools("base-image", *BUILD_TOOLS)
    require_binfmt("base-image", spec.arch)
    final.parent.mkdir(parents=True, exist_ok=True)
    with locked(final.with_name(final.name + ".lock"), "building the same base image"):
        if final.exists():
            progress.info(f"base image (built meanwhile): {final}")
            return final
        return _build(spec, final)


def _build(spec: BaseSpec, final: Path) -> Path:
    work = final.parent / f".work-{os.getpid()}"
    remove_tree(work)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        root = work / "root"
        with progress.step(f"bootstrap Debian {spec.suite} {spec.arch} (mmdebstrap, qemu-user)"):
            _bootstrap(spec, work, root)
        with progress.step("make it Raspberry Pi OS-shaped"):
            _shape(spec, root)
        with atomic_output(final) as tmp, progress.step("lay out the disk image"):
            _layout(spec, work, root, tmp)
            info = {"spec": asdict(spec), "key": spec.key(), "disk_id": spec.disk_id(), "sha256": sha256_file(tmp),
                    "seconds": round(time.monotonic() - t0, 1), "packages": _packages(root),
                    "host_keys": [p.read_text().strip() for p in sorted((root / "etc/ssh").glob("ssh_host_*.pub"))]}
            sidecar(final).write_text(json.dumps(info, indent=2) + "\n")
    finally:
        remove_tree(work)
    progress.info(f"base image: {final} ({time.monotonic() - t0:.0f}s)")
    return final


def _bootstrap(spec: BaseSpec, work: Path, root: Path) -> None:
    hook = work / "essential-hook.sh"
    hook.write_text(
        "#!/bin/sh\nset -e\n"
        'mkdir -p "$1/etc/initramfs-tools/conf.d"\n'
        "printf 'MODULES=list\\n' > \"$1/etc/initramfs-tools/conf.d/entropi.conf\"\n"
        f"printf '%s\\n' {' '.join(initrd_modules(spec.arch))} > \"$1/etc/initramfs-tools/modules\"\n"
        + (trixie_shape.essential_hook() + deferred.essential_hook() if spec.pi_trixie else "")
    )
    hook.chmod(0o755)
    run([
        "mmdebstrap", "--variant=minbase", f"--arch={spec.arch}", "--components=main,non-free-firmware",
        "--aptopt=APT::Install-Recommends \"false\"", f"--essential-hook={hook} \"$1\"",
        *(deferred.mmdebstrap_options() if spec.pi_trixie else []),
        "--include=" + ",".join(spec.packages),
        spec.suite, str(root), spec.mirror,
    ], hint="mmdebstrap failed; check the mirror is reachable and binfmt is enabled (./ci/setup)")


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if not versions:
        raise UserError("base-image", "the bootstrap installed no kernel", hint="check the mmdebstrap log")
    return versions[-1]


def config_txt(spec: BaseSpec, kver: str) -> str:
    """A config.txt shaped like Raspberry Pi OS's, for the Debian kernel."""
    arm64 = "# Run in 64-bit mode\narm_64bit=1\n\n" if spec.arch == "arm64" else ""
    return (
        "# For more options and information see\n# http://rptl.io/configtxt\n"
        "# Some settings may impact device functionality. See link above for details\n\n"
        "# Uncomment some or all of these to enable the optional hardware interfaces\n"
        "#dtparam=i2c_arm=on\n#dtparam=i2s=on\n#dtparam=spi=on\n\n"
        "# Enable audio (loads snd_bcm2835)\ndtparam=audio=on\n\n"
        f"{arm64}"
        "# Debian kernel: upstream device tree names, serial console\n"
        "upstream_kernel=1\nenable_uart=1\n\n"
        "[pi4]\n# Run as fast as firmware / board allows\narm_boost=1\n\n"
        "[all]\n"
        f"kernel=vmlinuz-{kver}\ninitramfs initrd.img-{kver} followkernel\n"
    )


def _shape(spec: BaseSpec, root: Path) -> None:
    kver = _kernel_version(root)
    disk = spec.disk_id()
    fw = root / "boot" / "firmware"
    fw.mkdir(parents=True, exist_ok=True)
    for name in (f"vmlinuz-{kver}", f"initrd.img-{kver}"):
        shutil.copy2(root / "boot" / name, fw / name)
    _write(fw / "config.txt", config_txt(spec, kver))
    _write(fw / "cmdline.txt", trixie_shape.cmdline(disk) if spec.pi_trixie else
           f"console=tty0 console=ttyAMA0,115200 root=PARTUUID={disk}-02 rootfstype=ext4 fsck.repair=yes rootwait\n")
    _write(root / "etc" / "fstab",
           "proc            /proc           proc    defaults          0       0\n"
           f"PARTUUID={disk}-01  {spec.boot_mount}  vfat    defaults          0       2\n"
           f"PARTUUID={disk}-02  /               ext4    defaults,noatime  0       1\n")
    _write(root / "etc" / "hostname", "raspberrypi\n")
    _write(root / "etc" / "hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
           "127.0.1.1\traspberrypi\n")
    # Raspberry Pi OS's own regenerator, which the pipeline must turn off.
    _write(root / "lib/systemd/system/regenerate_ssh_host_keys.service", REGENERATOR_UNIT)
    _write(root / "usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys", REGENERATOR_SCRIPT, 0o755)
    run(["systemctl", f"--root={root}", "enable", "regenerate_ssh_host_keys.service"])
    # A random seed, as a customising tool leaves it (libguestfs writes one).
    _write(root / "var/lib/systemd/random-seed", os.urandom(512), 0o600)
    if spec.pi_trixie:
        trixie_shape.shape(root, fw)
    else:
        bookworm_shape.shape(root)


def _packages(root: Path) -> dict[str, str]:
    out = text(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\\n"])
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _stage_boot(spec: BaseSpec, root: Path, stage: Path) -> None:
    """Move what belongs on the FAT partition out of the root tree into ``stage``."""
    stage.mkdir()
    fw = root / "boot" / "firmware"
    for item in fw.iterdir():
        shutil.move(str(item), stage / item.name)
    if spec.boot_mount == "/boot":  # legacy layout: all of /boot is the FAT partition
        fw.rmdir()
        for item in (root / "boot").iterdir():
            if item.is_file() and not (stage / item.name).exists():
                shutil.move(str(item), stage / item.name)
            elif item.is_file():
                item.unlink()
    for name in os.listdir(stage):
        if re.match(r"^(System\.map|config)-", name):
            os.unlink(stage / name)


def _layout(spec: BaseSpec, work: Path, root: Path, image: Path) -> None:
    boot_files = work / "bootfs"
    _stage_boot(spec, root, boot_files)
    if not (boot_files / DTB[spec.arch]).exists():
        raise UserError("base-image", f"no {DTB[spec.arch]} on the boot partition",
                        hint="raspi-firmware should have copied the device trees")
    used = int(text(["du", "-s", "--block-size=1M", str(root)]).split()[0])
    root_mib = ((used * 115 // 100 + 256) + 3) // 4 * 4
    boot_img, root_img = work / "boot.img", work / "root.img"
    run(["truncate", "-s", f"{BOOT_MIB}M", str(boot_img)])
    run(["mkfs.vfat", "-F", "32", *(["-s", "1"] if spec.pi_trixie else []), "-n", "bootfs", str(boot_img)])
    entries = [str(p) for p in sorted(boot_files.iterdir())]
    run(["mcopy", "-s", "-p", "-m", "-i", str(boot_img), *entries, "::/"])
    run(["mkfs.ext4", "-q", "-L", "rootfs", "-d", str(root), str(root_img), f"{root_mib}M"])
    total = spec.boot_start_mib + BOOT_MIB + root_mib
    run(["truncate", "-s", f"{total}M", str(image)])
    start_root = spec.boot_start_mib + BOOT_MIB
    table = (f"label: dos\nlabel-id: 0x{spec.disk_id()}\nunit: sectors\n\n"
             f"start={spec.boot_start_mib * 2048}, size={BOOT_MIB * 2048}, type=c\n"
             f"start={start_root * 2048}, size={root_mib * 2048}, type=83\n")
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(image)], input=table.encode())
    for part, offset in ((boot_img, spec.boot_start_mib), (root_img, start_root)):
        run(["dd", f"if={part}", f"of={image}", "bs=1M", f"seek={offset}", "conv=sparse,notrunc", "status=none"])


