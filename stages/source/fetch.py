"""Fetch: the verified raw base image from ``base.release``, ``base.url`` or ``base.path``.

Downloads land in the content-addressed cache (cache.py): a cache hit is re-checked cheaply
(size and mtime against the sidecar, whose digest is then trusted) or, with ``full_verify``,
by hashing everything again (and the signature, signature.py).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from stages.core import progress
from stages.core.config import Base, Config
from stages.core.errors import UserError
from stages.core.files import cache_dir, sha256_file
from stages.core.runner import require_tools
from stages.source.cache import cached_digest, locked, read_sidecar, reject, rejected_dir, write_sidecar
from stages.source.catalog import Release, lookup
from stages.source.compression import kind_from_name, kind_of, raw_name, tool_for
from stages.source.download import Unreachable, download, fetch_small, url_name
from stages.source.signature import verify_signature
from stages.source.unpack import DamagedArchive, unpack


@dataclass(frozen=True)
class Plan:
    """What to fetch and what it must hash to (resolved from the recipe, the catalogue, .sha256)."""

    source: str
    key: str
    url: str
    name: str
    sha256: str
    size: int | None = None
    extract_sha256: str = ""
    extract_size: int | None = None
    release: Release | None = None


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str           # of the raw image
    download_sha256: str  # of what was downloaded (= sha256 for a raw download)
    signer: str           # fingerprint that signed the download, or ""
    plan: Plan


def source_of(base: Base) -> str:
    return base.source or next((k for k in ("release", "url", "path") if getattr(base, k)), "")


def check_inputs(config: Config) -> None:
    """Everything that can be checked without the network."""
    where, base = str(config.recipe), config.base
    source = source_of(base)
    if source not in ("release", "url", "path"):
        raise UserError(where, f"fetch handles release, url and path bases, not {source!r}", key="base.source",
                        hint='base.source = "debian" is built by `invoke base-image`')
    if source == "url" and not (base.sha256 or base.sha256_url):
        raise UserError(where, "a download needs a checksum", key="base.url",
                        hint="set base.sha256 (or base.sha256_url: the .sha256 file beside the image)")
    if source == "path" and not Path(base.path).is_file():
        raise UserError(where, f"no such file: {base.path}", key="base.path",
                        hint="check the path (relative to the recipe)")
    if base.signature_url or base.signing_key:
        if not (base.signature_url and base.signing_key):
            missing = "base.signing_key" if base.signature_url else "base.signature_url"
            raise UserError(where, f"{missing} is needed to check a signature", key=missing,
                            hint="give both: the .sig address and the pinned public key file")
        if not Path(base.signing_key).is_file():
            raise UserError(where, f"no such key file: {base.signing_key}", key="base.signing_key",
                            hint="save the publisher's public key next to the recipe")
        require_tools(where, "gpg", "gpgv")
    name = base.path if source == "path" else base.url
    tool = tool_for(kind_from_name(name) or "")
    if tool:
        require_tools(where, tool)


def plan(config: Config) -> Plan:
    where, base = str(config.recipe), config.base
    source = source_of(base)
    if source == "release":
        rel = lookup(base.catalog, base.release, where=where)
        return Plan("release", "base.release", rel.url, url_name(rel.url), rel.download_sha256, rel.download_size,
                    rel.extract_sha256, rel.extract_size, rel)
    if source == "path":
        return Plan("path", "base.path", "", Path(base.path).name, base.sha256)
    sha = base.sha256 or _sha256_from_file(fetch_small(base.sha256_url, where, "base.sha256_url"),
                                           url_name(base.url), where, base.sha256_url)
    return Plan("url", "base.url", base.url, url_name(base.url), sha)


def _sha256_from_file(data: bytes, name: str, where: str, url: str) -> str:
    """``<hex>  <name>`` lines (sha256sum format); the line for ``name``, or the only line."""
    lines = [m.groups() for m in re.finditer(rb"^([0-9a-fA-F]{64})\s+\*?(.*?)\s*$", data, re.M)]
    mine = [h for h, n in lines if Path(n.decode(errors="replace")).name == name]
    if len(mine) == 1 or (not mine and len(lines) == 1):
        return (mine or [lines[0][0]])[0].decode().lower()
    raise UserError(where, f"{url} has no SHA-256 for {name}", key="base.sha256_url",
                    hint="it should hold a line '<64 hex digits>  <file name>'; or set base.sha256")


OFFLINE = ("or build with no Raspberry Pi download: --recipe recipes/debian-arm64.toml (built from Debian's "
           "archive) or base.path = \"<local image>\" in the recipe")


def fetch(config: Config, *, full_verify: bool = False) -> Fetched:
    check_inputs(config)
    try:
        p = plan(config)
        if p.source == "path":
            return _local(config, p)
        entry = cache_dir() / "downloads" / p.sha256
        entry.mkdir(parents=True, exist_ok=True)
        with locked(entry / ".lock"):
            return _fetch_url(config, p, entry, full_verify)
    except Unreachable as e:  # offline, most likely: say what builds without the network
        raise Unreachable(e.where, e.what, key=e.key, hint=f"{e.hint}; {OFFLINE}") from None


def fetch_base(config: Config, *, full_verify: bool = False) -> Path:
    """The verified raw base image of ``config`` (downloaded, checked, unpacked and cached as needed)."""
    return fetch(config, full_verify=full_verify).path


def _fetch_url(config: Config, p: Plan, entry: Path, full_verify: bool) -> Fetched:
    where = str(config.recipe)
    dl = entry / p.name
    signer = _dl_ok(config, dl, p.sha256, full_verify)
    if signer is None:
        signer = _download(config, p, dl)
    kind = kind_of(dl)
    if kind is None:
        return Fetched(dl, p.sha256, p.sha256, signer, p)
    raw = entry / (raw_name(p.name) if raw_name(p.name) != p.name else p.name + ".img")
    digest = cached_digest(raw, full_verify, p.extract_sha256)
    if digest is None:
        with progress.step(f"unpack {dl.name}"):
            digest = _unpack(config, p, dl, raw, where)
    return Fetched(raw, digest, p.sha256, signer, p)


def _dl_ok(config: Config, dl: Path, sha: str, full_verify: bool) -> str | None:
    """The signer ('' when unsigned) if the cached download is good, else None."""
    if not dl.exists():
        return None
    side = read_sidecar(dl)
    if cached_digest(dl, full_verify, sha) != sha:
        return None
    signer = str(side.get("signer", "")) if side else ""
    if config.base.signature_url and (full_verify or not signer):
        signer = verify_signature(config, dl)
        write_sidecar(dl, sha, signer)
    return signer


def _download(config: Config, p: Plan, dl: Path) -> str:
    where = str(config.recipe)
    part = dl.with_name(dl.name + ".part")
    for attempt in range(2):
        resumed = part.exists() and part.stat().st_size > 0
        with progress.step(f"download {p.name}" + (" (resuming)" if resumed else "")):
            got = download(p.url, part, where=where, key=p.key, size=p.size, label=p.name)
        if got == p.sha256:
            break
        reject(part)
        if resumed and attempt == 0:
            progress.warn("the resumed download does not match its checksum; downloading it again from the start")
            continue
        raise UserError(where, f"SHA-256 mismatch for {p.name}: expected {p.sha256}, got {got}", key=p.key,
                        hint=f"the file was moved to {rejected_dir()}; check the checksum setting, or the mirror")
    signer = ""
    if config.base.signature_url:
        try:
            signer = verify_signature(config, part)
        except UserError:
            reject(part)
            raise
    os.replace(part, dl)
    write_sidecar(dl, p.sha256, signer)
    return signer


def _unpack(config: Config, p: Plan, dl: Path, raw: Path, where: str) -> str:
    if p.extract_size:
        free = shutil.disk_usage(raw.parent).free
        if free < p.extract_size:
            raise UserError(where, f"{raw.parent} has {free} bytes free; the image needs {p.extract_size}",
                            key=p.key, hint="free some space, or point ENTROPI_CACHE at a larger disk")
    try:
        _, digest = unpack(dl, raw, where=where, key=p.key, size=p.extract_size, sha256=p.extract_sha256)
    except DamagedArchive:
        reject(dl)
        raise
    write_sidecar(raw, digest, "")
    return digest


def _local(config: Config, p: Plan) -> Fetched:
    """base.path: a raw image is used in place; a compressed one is unpacked into the cache."""
    where, src = str(config.recipe), Path(config.base.path)
    with progress.step(f"verify {src.name}"):
        digest = sha256_file(src)
    if p.sha256 and digest != p.sha256:
        raise UserError(where, f"SHA-256 mismatch for {src.name}: expected {p.sha256}, got {digest}",
                        key="base.sha256", hint="the file is not the image the recipe pins")
    signer = verify_signature(config, src) if config.base.signature_url else ""
    if kind_of(src) is None:
        return Fetched(src, digest, digest, signer, p)
    entry = cache_dir() / "downloads" / digest
    entry.mkdir(parents=True, exist_ok=True)
    raw = entry / raw_name(src.name)
    with locked(entry / ".lock"):
        image_digest = cached_digest(raw, False, "")
        if image_digest is None:
            with progress.step(f"unpack {src.name}"):
                _, image_digest = unpack(src, raw, where=where, key="base.path")
            write_sidecar(raw, image_digest, "")
    return Fetched(raw, image_digest, digest, signer, p)
