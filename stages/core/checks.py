"""The validations recipe settings declare (config.py): each returns None when the value is
fine, else (what is wrong, hint). Also the one size parser, used by the stages too."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# A check returns None when the value is fine, else (what is wrong, hint).
Check = Callable[[Any], "tuple[str, str] | None"]

# How an SSH public key line starts (users.authorized_keys holds such lines or .pub paths).
KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")



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


def matching(pattern: str, wrong: str, hint: str, *, also: tuple[str, ...] = (),
             never: tuple[str, ...] = ()) -> Check:
    """A text setting that must match ``pattern`` (``also``: other allowed values; ``never``:
    matching values still refused). ``wrong`` is formatted with the value (``{value!r}``)."""
    rx = re.compile(pattern)

    def check(value: Any) -> tuple[str, str] | None:
        if value in also or (rx.match(value) and value not in never):
            return None
        return wrong.format(value=value), hint

    return check


# Text settings checked against a pattern; the ones that also allow "" or a keyword first.
sha256_check = matching(r"^[0-9a-f]{64}$", "expected 64 hex digits, got {value!r}",
                        "copy the value from the .sha256 file", also=("",))
url_check = matching(r"^(https?|file)://", "expected an http(s):// or file:// URL, got {value!r}",
                     "write the full URL", also=("",))
module_check = matching(r"^[a-z0-9_-]+$", "not a kernel module name: {value!r}",
                        "use 'auto' or a name like bcm2835_rng", also=("auto",))
hostname_check = matching(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$", "not a valid hostname: {value!r}",
                          "use letters, digits and '-', at most 63")
device_check = matching(r"^(?!.*\.\.)/dev/[A-Za-z0-9_./-]+$", "expected a device path under /dev, got {value!r}",
                        "use /dev/hwrng")
username_check = matching(r"^[a-z_][a-z0-9_-]{0,31}$", "not a valid user name: {value!r}",
                          "use lower-case letters, digits, '_' or '-'", never=("root",))


def crypt_check(value: Any) -> tuple[str, str] | None:
    if any(c in value for c in ":\n\r"):
        return f"a password hash cannot contain ':' or a newline, got {value!r}", "paste the hash on one line"
    if value == "" or re.match(r"^\$(y|gy|7|2[abxy]|5|6|1)\$", value) or value in ("!", "*"):
        return None
    return (
        "expected a crypt(3) hash, got a plain password",
        "hash it with: openssl passwd -6  (or mkpasswd -m yescrypt) and paste the $...$ result",
    )


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


# The kernel's input pool (drivers/char/random.c): 4096 bits before Linux 5.18. Since 5.18 it is
# 256 bits and entropy_avail counts up to 256 exactly when the crng becomes ready (it never goes
# back down), so there the first-boot program waits for the crng only and min_entropy is unused.
LEGACY_POOL_BITS = 4096
POOL_BITS = 256


def kernel_poolsize(version: str) -> int:
    """poolsize of a kernel's input pool: 256 bits since Linux 5.18, 4096 before."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        return POOL_BITS
    return POOL_BITS if (int(m.group(1)), int(m.group(2))) >= (5, 18) else LEGACY_POOL_BITS


def fill_watermark(poolsize: int, fill_percent: int) -> int:
    """rngd's --fill-watermark in bits: it feeds the pool until entropy_avail reaches it, no further."""
    return poolsize * fill_percent // 100


def min_entropy_reachable(min_entropy: int, watermark: int | None, source: str, fill_percent: int = 50
                          ) -> tuple[str, str] | None:
    """None when the first-boot wait for entropy_avail >= min_entropy can end on a kernel with a
    4096-bit pool (the only kernels that wait for it); else (what is wrong, hint). ``watermark``:
    where rngd stops filling (None without rngd: the pool's size is the bound); ``source``: how
    that watermark came about, for the message; ``fill_percent``: rngd's, for the hint."""
    limit = LEGACY_POOL_BITS if watermark is None else watermark
    if min_entropy <= limit:
        return None
    if watermark is None:
        return (f"min_entropy {min_entropy} can never be reached: the kernel's pool holds at most "
                f"{LEGACY_POOL_BITS} bits", f"set firstboot.min_entropy to {LEGACY_POOL_BITS} or less")
    also = ", or raise rngd.fill_percent (at most 50)" if fill_percent < 50 else ""
    return (f"min_entropy {min_entropy} can never be reached: rngd fills the pool only up to its fill "
            f"watermark, {watermark} bits ({source})", f"set firstboot.min_entropy to {watermark} or less{also}")
