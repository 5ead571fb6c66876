"""Recipe schema: every setting declared once (key, type, default, help, validation).

This module is the declaration table: one frozen dataclass per recipe section, each field
made by ``setting()`` with its default, help text and check (checks.py). ``recipe.py`` reads
a TOML recipe against it into a frozen ``Config`` and renders it as documentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.checks import (
    Check,
    at_least,
    crypt_check,
    device_check,
    each_of,
    ecdsa_check,
    hostname_check,
    module_check,
    one_of,
    percent_half,
    positive,
    sha256_check,
    size_check,
    url_check,
    username_check,
)


def setting(default: Any, help: str, *, check: Check | None = None, path: bool | str = False) -> Any:
    """Declare one recipe setting: its default, its help text and its validation.

    ``path=True``: the value (or each entry of a list) is a file or directory, made absolute
    against the directory of the recipe that sets it (the current directory for --set);
    ``path="keys"``: the same, except that SSH key lines stay as they are."""
    meta = {"help": help, "check": check, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Base:
    """Where the image to customise comes from."""

    source: str = setting(
        "",
        "Which base to use: 'release' (an entry of a Raspberry Pi Imager catalogue), 'url', "
        "'path' (a local image file), 'debian' (a Pi-style image built from Debian packages). "
        "Empty: inferred from which of release/url/path is set.",
        check=one_of("", "release", "url", "path", "debian"),
    )
    release: str = setting("", "Name of the catalogue entry to use (with source 'release').")
    catalog: str = setting(
        "https://downloads.raspberrypi.com/os_list_imagingutility_v4.json",
        "Raspberry Pi Imager OS catalogue (JSON) searched for 'release'.",
        check=url_check,
    )
    url: str = setting("", "Download address of the image (.img, .img.xz, .zip, ...).", check=url_check)
    sha256: str = setting("", "Expected SHA-256 of the downloaded file.", check=sha256_check)
    sha256_url: str = setting("", "Address of a .sha256 file beside the image.", check=url_check)
    signature_url: str = setting("", "Address of the detached GPG signature (.sig).", check=url_check)
    signing_key: str = setting("", "Pinned public key file that must have made the signature.", path=True)
    path: str = setting("", "A local image file (with source 'path').", path=True)
    arch: str = setting("arm64", "Architecture of the Debian-built base.", check=one_of("arm64", "armhf"))
    suite: str = setting("bookworm", "Debian suite of the Debian-built base.", check=one_of("bookworm", "trixie"))
    mirror: str = setting("http://deb.debian.org/debian", "Debian mirror for the Debian-built base.", check=url_check)


@dataclass(frozen=True)
class Image:
    """Size of the output image."""

    grow: str = setting("", "Grow the root partition and file system by this much, e.g. \"+768M\".", check=size_check)
    expand: str = setting("auto", "First-boot growth of the root to the card's size: 'auto' keeps the image's "
                                  "own (Raspberry Pi OS's) or adds entropi-growroot; 'none' adds nothing.",
                          check=one_of("auto", "none"))
    shrink: bool = setting(False, "At the end, shrink the root file system, its partition and the file to the "
                                  "data (plus shrink_free); the image's own first-boot expansion stays.")
    shrink_free: str = setting("64M", "Free space left in the root file system when shrinking.", check=size_check)


@dataclass(frozen=True)
class Hwrng:
    """The hardware random number generator."""

    enable: bool = setting(True, "Enable the SoC's hardware RNG (dtparam=random=on and its kernel module).")
    module: str = setting("auto", "Kernel module to load: 'auto' picks what the image's kernel has.",
                          check=module_check)
    tpm: str = setting("", "TPM HAT to use as a second RNG: '' or 'slb9670'.", check=one_of("", "slb9670"))


@dataclass(frozen=True)
class Rngd:
    """The rng-tools daemon that feeds the hardware RNG to the kernel."""

    package: str = setting(
        "rng-tools-debian",
        "Package to install: 'rng-tools-debian', 'rng-tools5' or 'none'.",
        check=one_of("rng-tools-debian", "rng-tools5", "none"),
    )
    device: str = setting("/dev/hwrng", "Entropy source device rngd reads.", check=device_check)
    fill_percent: int = setting(50, "Fill the kernel pool up to this percent (at most half).", check=percent_half)


@dataclass(frozen=True)
class Packages:
    """More software."""

    install: list[str] = setting([], "Extra Debian packages to install in the image.")
    local_debs: str = setting("", "Directory of .deb files to install with no network.", path=True)


@dataclass(frozen=True)
class Users:
    """The login user and root."""

    name: str = setting("pi", "Name of the login user (created or renamed).", check=username_check)
    password_hash: str = setting(
        "",
        "crypt(3) hash of the user's password ('' keeps it unchanged, '!' locks it).",
        check=crypt_check,
    )
    authorized_keys: list[str] = setting(
        [], "SSH public keys for the user: key lines, or paths of .pub files (relative to the recipe).",
        path="keys",
    )
    lock_root: bool = setting(True, "Lock root's password (passwd -dl root).")
    hostname: str = setting(
        "raspberrypi", "Hostname of the image (a card may override it at flash).", check=hostname_check
    )


@dataclass(frozen=True)
class Ssh:
    """The SSH server and its host keys."""

    enable: bool = setting(True, "Start sshd at boot.")
    password_authentication: str = setting(
        "auto", "'yes', 'no', or 'auto' (no when authorized_keys are given).", check=one_of("auto", "yes", "no")
    )
    key_types: list[str] = setting(
        ["ed25519", "ecdsa", "rsa"], "Host key types made at first boot.", check=each_of("ed25519", "ecdsa", "rsa")
    )
    rsa_bits: int = setting(4096, "RSA host key size.", check=at_least(2048))
    ecdsa_bits: int = setting(521, "ECDSA host key size: 256, 384 or 521.", check=ecdsa_check)


@dataclass(frozen=True)
class Firstboot:
    """The first-boot unit that makes host keys once the kernel has entropy."""

    wait_timeout: int = setting(300, "Longest wait (seconds) for the kernel's generator.", check=positive)
    on_timeout: str = setting(
        "continue", "'continue' (make keys, warn loudly) or 'fail' (keep sshd down).", check=one_of("continue", "fail")
    )
    min_entropy: int = setting(
        2048, "entropy_avail to wait for on kernels before 5.18 (a 4096-bit pool; newer ones wait for the crng); "
              "at most rngd's fill watermark, fill_percent of 4096.", check=positive)


@dataclass(frozen=True)
class Overlays:
    """Files copied into the image as they are."""

    builtin: bool = setting(True, "Copy the project's overlays/boot and overlays/rootfs.")
    extra: list[str] = setting([], "More directories holding boot/ and/or rootfs/ trees (relative to the recipe).",
                               path=True)


@dataclass(frozen=True)
class Output:
    """What lands in the output directory."""

    name: str = setting("", "Base name of the outputs ('' = the recipe file's name).")
    dir: str = setting("out", "Output directory (relative to the current directory).")
    compress: str = setting("xz", "Compressed copy: 'xz', 'zst' or 'none'.", check=one_of("xz", "zst", "none"))
    bmap: bool = setting(True, "Write a .bmap for fast flashing.")


@dataclass(frozen=True)
class BootTest:
    """The QEMU boot test."""

    timeout: int = setting(600, "Hard limit (seconds) for one boot.", check=positive)


SECTIONS: dict[str, type] = {
    "base": Base,
    "image": Image,
    "hwrng": Hwrng,
    "rngd": Rngd,
    "packages": Packages,
    "users": Users,
    "ssh": Ssh,
    "firstboot": Firstboot,
    "overlays": Overlays,
    "output": Output,
    "boot_test": BootTest,
}


@dataclass(frozen=True)
class Config:
    """A validated recipe. Frozen: stages record what they do in state, never here."""

    recipe: Path
    recipe_sha256: str
    base: Base
    image: Image
    hwrng: Hwrng
    rngd: Rngd
    packages: Packages
    users: Users
    ssh: Ssh
    firstboot: Firstboot
    overlays: Overlays
    output: Output
    boot_test: BootTest
    origins: dict[str, str] = field(default_factory=dict)  # dotted key -> file:, extends:, --set or default

    @property
    def name(self) -> str:
        return self.output.name or self.recipe.stem

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
