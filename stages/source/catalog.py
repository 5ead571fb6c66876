"""`base.release`: find an entry of a Raspberry Pi Imager OS catalogue (os_list JSON).

The catalogue nests entries in ``os_list`` and ``subitems``; an image entry has ``name``,
``url``, ``release_date``, ``image_download_size``, ``image_download_sha256`` and, for the
unpacked image, ``extract_size`` and ``extract_sha256``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stages.core.errors import UserError
from stages.source.download import fetch_small

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Release:
    name: str
    url: str
    release_date: str
    download_size: int | None
    download_sha256: str
    extract_size: int | None
    extract_sha256: str


def _entries(items: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, dict):
            if "url" in item:
                yield item
            yield from _entries(item.get("subitems"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) and _HEX64.match(value.lower()) else ""


def find_release(data: bytes, name: str, *, where: str, catalog: str) -> Release:
    """The entry called ``name`` (exact, else ignoring case) in the catalogue ``data``."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(where, f"the catalogue {catalog} is not JSON: {e}", key="base.catalog",
                        hint="check base.catalog; it should be a Raspberry Pi Imager os_list JSON") from None
    entries = list(_entries(doc.get("os_list") if isinstance(doc, dict) else None))
    if not entries:
        raise UserError(where, f"the catalogue {catalog} has no os_list entries", key="base.catalog",
                        hint="check base.catalog; it should be a Raspberry Pi Imager os_list JSON")
    found = [e for e in entries if e.get("name") == name] or [
        e for e in entries if str(e.get("name", "")).casefold() == name.casefold()]
    if not found:
        names = sorted({str(e.get("name")) for e in entries if e.get("name")})
        shown = ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise UserError(where, f"no release named {name!r} in {catalog}", key="base.release",
                        hint=f"names there: {shown}")
    urls = {e["url"] for e in found}
    if len(urls) > 1:
        raise UserError(where, f"{len(urls)} different images are named {name!r} in {catalog}", key="base.release",
                        hint="pin one with base.url and base.sha256")
    entry = found[0]
    sha = _hex(entry.get("image_download_sha256"))
    if not sha:
        raise UserError(where, f"the catalogue entry {name!r} has no image_download_sha256", key="base.release",
                        hint="pin the image with base.url and base.sha256 instead")
    return Release(
        name=str(entry.get("name")), url=str(entry["url"]), release_date=str(entry.get("release_date", "")),
        download_size=_int(entry.get("image_download_size")), download_sha256=sha,
        extract_size=_int(entry.get("extract_size")), extract_sha256=_hex(entry.get("extract_sha256")),
    )


def lookup(catalog: str, name: str, *, where: str) -> Release:
    return find_release(fetch_small(catalog, where, "base.catalog"), name, where=where, catalog=catalog)
