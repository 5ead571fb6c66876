"""Recipe schema: every setting declared once (key, type, default, help, validation).

A recipe is TOML. ``load_recipe`` turns it into a frozen ``Config``; unknown keys, wrong
types and impossible values raise ``UserError`` naming the file, the key and the fix.
``describe_settings`` renders the same declarations as documentation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.errors import UserError

# A check returns None when the value is fine, else (what is wrong, hint).
Check = Callable[[Any], "tuple[str, str] | None"]


def setting(default: Any, help: str, *, check: Check | None = None, path: bool = False) -> Any:
    """Declare one recipe setting: its default, its help text and its validation."""
    meta = {"help": help, "check": check, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def one_of(*choices: str) -> Check:
    def check(value: Any) -> tuple[str, str] | None:
        if value in choices:
            return None
        return f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}", (
            f"use one of: {', '.join(choices)}"
        )

    return check


def at_least(low: int, *, also: tuple[int, ...] = ()) -> Check:
    def check(value: Any) -> tuple[str, str] | None:
        if value >= low or value in also:
            return None
        return f"expected an integer >= {low}, got {value!r}", f"use {low} or more"

    return check


def each_of(*choices: str) -> Check:
    def check(value: Any) -> tuple[str, str] | None:
        bad = [v for v in value if v not in choices]
        if not bad:
            return None
        return f"unknown entry {bad[0]!r}", f"entries are {', '.join(choices)}"

    return check


_SIZE = re.compile(r"^\+?(\d+)([KMG]i?B?|)$", re.IGNORECASE)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def parse_size(text: str) -> int:
    """'+768M' -> bytes. Units K, M, G (binary)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(text)
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)[:1].lower()]
    return int(m.group(1)) * scale


def size_check(value: Any) -> tuple[str, str] | None:
    if value == "":
        return None
    try:
        parse_size(value)
    except ValueError:
        return f"expected a size like \"+768M\", got {value!r}", "write a number with K, M or G"
    return None


def sha256_check(value: Any) -> tuple[str, str] | None:
    if value == "" or _HEX64.match(value):
        return None
    return f"expected 64 hex digits, got {value!r}", "copy the value from the .sha256 file"


def url_check(value: Any) -> tuple[str, str] | None:
    if value == "" or re.match(r"^(https?|file)://", value):
        return None
    return f"expected an http(s):// or file:// URL, got {value!r}", "write the full URL"


def crypt_check(value: Any) -> tuple[str, str] | None:
    if any(c in value for c in ":\n\r"):
        return f"a password hash cannot contain ':' or a newline, got {value!r}", "paste the hash on one line"
    if value == "" or re.match(r"^\$(y|gy|7|2[abxy]|5|6|1)\$", value) or value in ("!", "*"):
        return None
    return (
        "expected a crypt(3) hash, got a plain password",
        "hash it with: openssl passwd -6  (or mkpasswd -m yescrypt) and paste the $...$ result",
    )


_HOST = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def hostname_check(value: Any) -> tuple[str, str] | None:
    if _HOST.match(value):
        return None
    return f"not a valid hostname: {value!r}", "use letters, digits and '-', at most 63"


def username_check(value: Any) -> tuple[str, str] | None:
    if re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value) and value != "root":
        return None
    return f"not a valid user name: {value!r}", "use lower-case letters, digits, '_' or '-'"


def module_check(value: Any) -> tuple[str, str] | None:
    if value == "auto" or re.match(r"^[a-z0-9_-]+$", value):
        return None
    return f"not a kernel module name: {value!r}", "use 'auto' or a name like bcm2835_rng"


def device_check(value: Any) -> tuple[str, str] | None:
    if re.match(r"^/dev/[A-Za-z0-9_./-]+$", value) and ".." not in value:
        return None
    return f"expected a device path under /dev, got {value!r}", "use /dev/hwrng"


def ecdsa_check(value: Any) -> tuple[str, str] | None:
    if value in (256, 384, 521):
        return None
    return f"expected 256, 384 or 521, got {value!r}", "use 521 (the default)"


def positive(value: Any) -> tuple[str, str] | None:
    if value > 0:
        return None
    return f"expected a positive number, got {value!r}", "use a number above 0"


def percent_half(value: Any) -> tuple[str, str] | None:
    if 1 <= value <= 50:
        return None
    return f"expected 1..50 (percent of the pool), got {value!r}", (
        "rngd should fill at most half of the kernel pool; use 50 or less"
    )


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
        [], "SSH public keys for the user: key lines, or paths of .pub files (relative to the recipe)."
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
    min_entropy: int = setting(2048, "entropy_avail to wait for on old kernels (poolsize above 256).", check=positive)


@dataclass(frozen=True)
class Overlays:
    """Files copied into the image as they are."""

    builtin: bool = setting(True, "Copy the project's overlays/boot and overlays/rootfs.")
    extra: list[str] = setting([], "More directories holding boot/ and/or rootfs/ trees (relative to the recipe).")


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

    @property
    def name(self) -> str:
        return self.output.name or self.recipe.stem

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a list of strings"
    return {bool: "true or false", int: "an integer", str: "a string"}[tp]


def _typed(value: Any, tp: Any) -> bool:
    if typing.get_origin(tp) is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def iter_settings() -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every declared setting as (dotted key, field, type)."""
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}", f, hints[f.name]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _cross_checks(where: str, values: dict[str, dict[str, Any]]) -> None:
    base = values["base"]
    chosen = [k for k in ("release", "url", "path") if base[k]]
    source = base["source"]
    if not source:
        if len(chosen) != 1:
            raise UserError(
                where, f"set exactly one of base.release, base.url, base.path (found {len(chosen)})",
                key="base", hint="or set base.source = \"debian\" for a Pi-style image built from Debian",
            )
    elif source != "debian" and not base[source]:
        raise UserError(where, f"base.source is {source!r} but base.{source} is empty",
                        key=f"base.{source}", hint=f"set base.{source}")
    elif source == "debian" and chosen:
        raise UserError(where, f"base.source is 'debian' but base.{chosen[0]} is set too",
                        key=f"base.{chosen[0]}", hint="remove it, or drop base.source")
    if base["sha256"] and base["sha256_url"]:
        raise UserError(where, "both sha256 and sha256_url are set", key="base.sha256",
                        hint="keep one of them")
    if base["signature_url"] and not base["signing_key"]:
        raise UserError(where, "a signature is given but no key to check it against", key="base.signing_key",
                        hint="set base.signing_key to the pinned public key file")
    if values["ssh"]["password_authentication"] == "yes" and values["users"]["password_hash"] in ("!", "*"):
        raise UserError(where, "password logins on but the user's password is locked",
                        key="ssh.password_authentication", hint="give users.password_hash or set it to 'no'")
    if not values["ssh"]["key_types"]:
        raise UserError(where, "no host key types", key="ssh.key_types", hint="keep at least \"ed25519\"")


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Parse and validate a recipe file. Raises UserError for every problem."""
    recipe = Path(path)
    where = str(path)
    try:
        raw_bytes = recipe.read_bytes()
    except FileNotFoundError:
        raise UserError(where, "no such recipe file", hint="pass --recipe with an existing .toml file") from None
    except OSError as e:
        raise UserError(where, f"cannot read: {e.strerror}", hint="check the path and its permissions") from None
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(where, "not UTF-8 text", hint="save the recipe as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(where, f"not valid TOML: {e}", hint="check the quoting and [section] lines") from None
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value

    values: dict[str, dict[str, Any]] = {}
    for section in data:
        if section not in SECTIONS:
            raise UserError(where, "unknown section", key=section,
                            hint=f"sections are {', '.join(SECTIONS)}; see `invoke recipe-doc`")
        if not isinstance(data[section], dict):
            raise UserError(where, "expected a [section] table", key=section,
                            hint=f"write [{section}] followed by its settings")
    known = [key for key, _, _ in iter_settings()]
    for section, table in data.items():
        for name in table:
            if f"{section}.{name}" not in known:
                close = [k for k in known if k.startswith(section + ".")]
                raise UserError(where, "unknown setting", key=f"{section}.{name}",
                                hint=f"{section} takes {', '.join(k.split('.')[1] for k in close)}")
    for key, f, tp in iter_settings():
        section, name = key.split(".")
        given = data.get(section, {})
        value = given.get(name, _default(f))
        if name in given:
            if not _typed(value, tp):
                raise UserError(where, f"expected {_type_name(tp)}, got {value!r}", key=key,
                                hint=f"write it like {key.split('.')[1]} = {_example(tp)}")
            check = f.metadata["check"]
            if check is not None:
                problem = check(value)
                if problem:
                    raise UserError(where, problem[0], key=key, hint=problem[1])
            if f.metadata["path"] and value:
                value = str((recipe.parent / value).resolve()) if not Path(value).is_absolute() else value
            if key == "overlays.extra":
                value = [str((recipe.parent / v).resolve()) for v in value]
        values.setdefault(section, {})[name] = value
    _cross_checks(where, values)
    sections = {s: SECTIONS[s](**values[s]) for s in SECTIONS}
    digest = hashlib.sha256(raw_bytes + repr(sorted((overrides or {}).items())).encode()).hexdigest()
    return Config(recipe=recipe, recipe_sha256=digest, **sections)


def _example(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return '["a", "b"]'
    return {bool: "true", int: "42", str: '"text"'}[tp]


def describe_settings() -> str:
    """Markdown reference of every setting, generated from the declarations."""
    lines: list[str] = []
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]  {(cls.__doc__ or '').strip()}")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"  {f.name} = {_toml(_default(f))}    ({_type_name(hints[f.name])})")
            lines.append(f"      {f.metadata['help']}")
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def resolved_toml(config: Config) -> str:
    """The resolved settings of a recipe, as TOML (what `recipe-check` prints)."""
    lines = [f"# {config.recipe} (sha256 {config.recipe_sha256[:16]})"]
    for section, values in config.as_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)
