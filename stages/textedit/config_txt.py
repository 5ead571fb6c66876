"""config.txt edits: the hardware RNG on (dtparam=random=on) for every board, extra lines kept once."""

from __future__ import annotations

import re
from dataclasses import dataclass

# config.txt is read top to bottom by the firmware. ``[filter]`` lines ([pi4], [cm5],
# [none], [gpio4=1], [0x...], ...) make the lines after them conditional until the next
# filter; ``[all]`` (or no filter at all) makes them apply to every board. ``dtparam=``
# takes comma-separated ``name=value`` items. Overlay scope: a dtparam after a dtoverlay
# goes to that overlay only when the overlay exports a parameter of that name, otherwise
# to the base device tree (raspberrypi/documentation, device-tree "DT parameters"); no
# overlay exports ``random``, and the block we append puts its dtparams before its
# dtoverlays so that our own overlay never captures them.


def _section(line: str) -> str | None:
    s = line.strip().lstrip("\ufeff")
    return s if s.startswith("[") and s.endswith("]") else None


def _directive(line: str) -> tuple[str, str] | None:
    """('dtparam', 'audio=on,random=off') for an active line; None for comments/blank/filters."""
    s = line.strip().lstrip("\ufeff")
    if not s or s.startswith(("#", "[")) or "=" not in s:
        return None
    name, _, value = s.partition("=")
    return name.strip(), value.strip()


def _param(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _overlay(value: str) -> str:
    return re.split(r"[,:]", value, maxsplit=1)[0].strip()


def _wanted_key(line: str) -> tuple[str, str]:
    d = _directive(line)
    if d is None:
        raise ValueError(f"not a config.txt setting: {line!r}")
    name, value = d
    if name == "dtparam":
        return name, _param(value)
    if name == "dtoverlay":
        if not _overlay(value):
            raise ValueError(f"empty overlay: {line!r}")
        return name, _overlay(value)
    return name, ""


def _normalise_wanted(extra: list[str]) -> list[str]:
    """dtparam=random=on first, extra after; combined dtparams split; duplicates dropped."""
    lines: list[str] = []
    for raw in ["dtparam=random=on", *extra]:
        d = _directive(raw)
        if d is not None and d[0] == "dtparam" and "," in d[1]:
            lines.extend(f"dtparam={item.strip()}" for item in d[1].split(",") if item.strip())
        else:
            lines.append(raw.strip())
    by_key: dict[tuple[str, str], str] = {}
    for line in lines:
        key = _wanted_key(line)
        if key in by_key and by_key[key] != line:
            raise ValueError(f"conflicting config.txt lines: {by_key[key]!r} and {line!r}")
        by_key.setdefault(key, line)
    ordered = list(by_key.values())
    # dtparams before dtoverlays: a dtparam right after our dtoverlay would be offered to it.
    return sorted(ordered, key=lambda w: _wanted_key(w)[0] == "dtoverlay")


@dataclass
class _Hit:
    index: int  # line number
    whole: bool  # the line is only this setting (not one item of a combined dtparam)


def _find_settings(lines: list[str], keys: dict[tuple[str, str], str],
                   dt_keys: set[str]) -> dict[tuple[str, str], list[_Hit]]:
    """Every line that sets one of ``keys`` (a dtparam item, an overlay, a plain setting)."""
    hits: dict[tuple[str, str], list[_Hit]] = {k: [] for k in keys}
    for i, line in enumerate(lines):
        d = _directive(line)
        if d is None:
            continue
        name, value = d
        if name == "dtparam":
            params = [_param(item) for item in value.split(",")]
            for p in params:
                if p in dt_keys:
                    hits[("dtparam", p)].append(_Hit(i, len(params) == 1))
        elif name == "dtoverlay":
            if ("dtoverlay", _overlay(value)) in keys:
                hits[("dtoverlay", _overlay(value))].append(_Hit(i, True))
        elif (name, "") in keys:
            hits[(name, "")].append(_Hit(i, True))
    return hits


def _without(lines: list[str], drop: set[int], dt_keys: set[str]) -> list[str]:
    """``lines`` without the ``drop`` ones; a combined dtparam among them keeps its other items."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if i not in drop:
            out.append(line)
            continue
        d = _directive(line)
        assert d is not None
        if d[0] != "dtparam":
            continue
        items = [item for item in d[1].split(",") if _param(item) not in dt_keys]
        if items:  # a combined dtparam keeps its other items, its indentation and its eol
            lead = line[: len(line) - len(line.lstrip())]
            ending = line[len(line.rstrip("\r\n")):]
            out.append(f"{lead}dtparam={','.join(items)}{ending}")
    return out


def enable_hwrng_config(text: str, extra: list[str] | None = None) -> str:
    """Make ``dtparam=random=on`` (and each ``extra`` line) appear exactly once, in ``[all]``.

    Any other occurrence of the same setting (``dtparam=random=off``, a duplicate, one in a
    ``[pi4]`` or ``[none]`` section, the ``random=off`` item of ``dtparam=audio=on,random=off``,
    ``dtoverlay=tpm-slb9670`` with other parameters) is removed; the setting is then
    appended to the last section when that is ``[all]`` (or when there are no sections),
    else after a new ``[all]`` line at the end. A setting that is already exactly once,
    in that final ``[all]`` part, and exactly as wanted stays where it is, so running this
    again changes nothing. ``extra`` dtparams are base device-tree parameters.

    Every other line (comments, ``#dtparam=random=on``, conditional sections) is kept byte
    for byte, and so are a UTF-8 BOM and the line endings (CRLF stays CRLF). Raises
    ValueError for an ``extra`` that is not a setting or contradicts another.
    """
    wanted = _normalise_wanted(list(extra or []))
    keys = {_wanted_key(w): w for w in wanted}
    dt_keys = {k[1] for k in keys if k[0] == "dtparam"}
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    eol = "\r\n" if "\r\n" in body else "\n"
    lines = body.splitlines(keepends=True)

    # Where the final "effective for all boards" part starts.
    tail_start, last_section = 0, None
    for i, line in enumerate(lines):
        if (sec := _section(line)) is not None:
            last_section, tail_start = sec, i + 1
    tail_is_all = last_section in (None, "[all]")

    hits = _find_settings(lines, keys, dt_keys)
    keep: set[int] = set()  # lines already right
    append: list[str] = []
    for key, line in keys.items():
        found = hits[key]
        if (len(found) == 1 and found[0].whole and tail_is_all and found[0].index >= tail_start
                and lines[found[0].index].strip().lstrip("\ufeff") == line):
            keep.add(found[0].index)
        else:
            append.append(line)
    drop = {h.index for found in hits.values() for h in found} - keep
    out = _without(lines, drop, dt_keys)
    if not append:
        return bom + "".join(out)
    if out and not out[-1].endswith("\n"):
        out[-1] += eol
    if not tail_is_all:
        out.append(f"[all]{eol}")
    out.extend(f"{w}{eol}" for w in append)
    return bom + "".join(out)
