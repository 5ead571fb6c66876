"""config.txt edits: the hardware RNG on (dtparam=random=on) for every board, extra lines kept once."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.textedit.config_read import filter_of, include_of, random_effect

# config.txt is read top to bottom by the firmware (config_read.py reads it the same way, with
# its sources). ``[filter]`` lines ([pi4], [cm5], [none], [gpio4=1], [0x...], ...) make the lines
# after them conditional until the next filter; ``[all]`` (or no filter at all) makes them apply
# to every board; an ``include``d file is read in place and may end inside a filter, so after an
# include our block starts with its own ``[all]``. ``dtparam=`` (long name ``device_tree_param=``)
# takes comma-separated ``name=value`` items; ``dtoverlay=`` is also ``device_tree_overlay=``.
# Overlay scope: a dtparam after a dtoverlay goes to that overlay only when the overlay exports a
# parameter of that name, otherwise to the base device tree (raspberrypi/documentation,
# device-tree "DT parameters"); no overlay exports ``random``, and the block we append puts its
# dtparams before its dtoverlays so that our own overlay never captures them.
RANDOM_ON = "dtparam=random=on"
ALIASES = {"device_tree_param": "dtparam", "device_tree_overlay": "dtoverlay"}


def _section(line: str) -> str | None:
    """``[name]`` for a filter line as config_read sees it ("[?]" if malformed), else None."""
    name = filter_of(line.rstrip("\r\n").lstrip("\ufeff"))
    return None if name is None else f"[{name}]"


def _directive(line: str) -> tuple[str, str] | None:
    """('dtparam', 'audio=on,random=off') for an active line (long names mapped); None otherwise."""
    s = line.strip().lstrip("\ufeff")
    if not s or s.startswith(("#", "[")) or "=" not in s:
        return None
    name, _, value = s.partition("=")
    return ALIASES.get(name.strip(), name.strip()), value.strip()


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
    for raw in [RANDOM_ON, *extra]:
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
        if items:  # a combined dtparam keeps its other items, its key, indentation and eol
            head = line.partition("=")[0]
            ending = line[len(line.rstrip("\r\n")):]
            out.append(f"{head}={','.join(items)}{ending}")
    return out


def enable_hwrng_config(text: str, extra: list[str] | None = None) -> str:
    """Make ``dtparam=random=on`` (and each ``extra`` line) appear exactly once, in ``[all]``.

    Any other occurrence of the same setting (``dtparam=random=off``, a duplicate, one in a
    ``[pi4]`` or ``[none]`` section, the ``random=off`` item of ``dtparam=audio=on,random=off``,
    the long name ``device_tree_param=random=off``, ``dtoverlay=tpm-slb9670`` with other
    parameters) is removed; the setting is then appended to the last section when that is
    ``[all]`` (or when there are no sections) and no ``include`` follows it, else after a new
    ``[all]`` line at the end. A setting that is already exactly once, in that final ``[all]``
    part, exactly as wanted and (for the RNG) after every line that config_read.py says may set
    ``random``, stays where it is, so running this again changes nothing. ``extra`` dtparams
    are base device-tree parameters.

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
    lines = [line for line in re.split(r"(?<=\n)", body) if line]  # LF (or CRLF) ends a line, as for the firmware
    tail_start, tail_is_all = _tail(lines)

    hits = _find_settings(lines, keys, dt_keys)
    keep: set[int] = set()  # lines already right
    append: list[str] = []
    for key, line in keys.items():
        found = hits[key]
        if tail_is_all and len(found) == 1 and found[0].whole and _already_right(lines, found[0].index, line,
                                                                                   tail_start):
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


def _tail(lines: list[str]) -> tuple[int, bool]:
    """Where the final part starts (after the last filter line), and whether it is for every board.

    It is not when the last filter is not ``[all]``, nor when an ``include`` follows it: the
    included file may end inside a filter.
    """
    tail_start, last_section, include_after = 0, None, False
    for i, line in enumerate(lines):
        if (sec := _section(line)) is not None:
            last_section, tail_start, include_after = sec, i + 1, False
        elif include_of(line.rstrip("\r\n")) is not None:
            include_after = True
    return tail_start, last_section in (None, "[all]") and not include_after


def _already_right(lines: list[str], index: int, wanted: str, tail_start: int) -> bool:
    """The line at ``index`` is ``wanted`` to the letter, in the final part, and for the RNG the
    last line that may set ``random`` in any reading (a long name, upper case, an overlay's item)."""
    if index < tail_start or lines[index].rstrip("\r\n").lstrip(" \t") != wanted:
        return False
    return wanted != RANDOM_ON or all(random_effect(line.rstrip("\r\n")) is None for line in lines[index + 1:])
