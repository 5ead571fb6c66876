"""Read config.txt as the Raspberry Pi firmware does: is the hardware RNG on, for every model?

The reader keeps, per board, the set of values ``random`` may have ({on}, {off} or both); a
verdict is "on", "off" or "maybe" (both) with the file:line that decided it, or "default".
Where the firmware's behaviour is not documented, the reader takes every reading it could
have and merges them, so a setting it cannot be sure of reads "maybe", never "on".

Sources (raspberrypi/documentation unless named):
- computers/config_txt/conditional.adoc, "Conditional filters": ``[all]`` resets every
  filter; ``[none]`` stops what follows from applying; "filters of the same type replace
  each other" (``[pi2]`` overrides ``[pi1]``), filters of different types combine (AND)
  until ``[all]``. The model table (newest text: ``[pi5]`` is 5, 500/500+ and CM5;
  ``[pi400]``, ``[cm4]``, ``[cm4s]`` also see ``[pi4]``; ``[pi02]`` also sees ``[pi0w]`` and
  ``[pi0]``; ``[cm0]`` sees ``[pi02]``; ``[cm3+]`` sees ``[pi3+]``) is ``BOARDS``; rows that only
  the newest text has (CM0 in ``[pi0]``/``[pi0w]``, CM3+ in ``[pi3+]``) count as "maybe".
  ``[board-type=0x..]`` is in the model table (revision-code type, raspberry-pi/
  revision-codes.adoc); whether it replaces ``[pi4]`` or combines with it is not said, so
  both readings are merged. ``[gpioN=x]``, ``[0x<serial>]``, ``[EDID=..]``, ``[HDMI:n]``,
  ``[tryboot]`` and the boot-variable expressions (``[partition=N]``, ``[boot_partition=N]``,
  rpi-eeprom release notes) are conditions that may hold: under them a setting is "maybe".
  An unknown filter may be either kind: every board is "maybe" under it. What ``[none]``
  does when another filter follows is not said: "maybe" too.
- computers/config_txt/what_is_config_txt.adoc: comments are lines starting with ``#``;
  ``include FILE`` inserts that file's content (read here through ``read``, relative to the
  boot partition; a missing one is reported, a cycle is a problem); entries are cut at 98
  characters (78 before): a setting whose meaning depends on the cut is "maybe".
- computers/configuration/device-tree.adoc, part 3: ``dtparam=a=b,c=d``; a dtparam after a
  dtoverlay goes to that overlay only when it exports a parameter of that name, else to the
  base DT. No overlay exports ``random`` (stages/textedit/config_txt.py), so it always goes
  to the base DT; a ``random`` item on a ``dtoverlay=`` line is "maybe".
- raspberrypi/linux arch/arm/boot/dts/overlays/README, base DTB parameters: ``random``
  "Set to "on" to enable the hardware random number generator (default "on")" (bcm2712
  declares it the same way, ``status = "okay"``): no line means on, reported as "default".
- raspberrypi/userland helpers/dtoverlay: ``random`` targets a ``status`` property; y, yes,
  on, true, enable, 1 become "okay", n, no, off, false, 0 "disabled" (exact, lower case); a
  parameter without a value is "true". Other values (``On``, ``on # note``, ``on `` with a
  trailing blank) are "maybe". ``device_tree_param=``/``device_tree_overlay=`` are the long
  names (raspi-config matches both). A line the firmware might read differently (a BOM,
  blanks around ``=``, upper case) counts with every reading. CRLF ends lines like LF.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Tri = Literal["yes", "maybe", "no"]
Read = Callable[[str], str | None]
ANY = frozenset({"on", "off", "none"})  # "none": the line leaves the value as it was
ON_WORDS = frozenset({"y", "yes", "on", "true", "enable", "1", "okay", "ok"})
OFF_WORDS = frozenset({"n", "no", "off", "false", "0", "disabled"})
DT_KEYS = {"dtparam": False, "device_tree_param": False, "dtoverlay": True, "device_tree_overlay": True}
LINE_LIMITS = (98, 78)

# board: (revision-code types, filters it reads, filters it may read)
BOARDS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "pi0": ((0x09,), "pi0", ""),
    "pi0w": ((0x0C,), "pi0 pi0w", ""),
    "pi02": ((0x12,), "pi0 pi0w pi02", ""),
    "cm0": ((0x1B,), "cm0 pi02", "pi0 pi0w"),
    "pi1": ((0x00, 0x01, 0x02, 0x03), "pi1", ""),
    "cm1": ((0x06,), "pi1 cm1", ""),
    "pi2": ((0x04,), "pi2", ""),
    "pi3": ((0x08,), "pi3", ""),
    "pi3+": ((0x0D, 0x0E), "pi3 pi3+", ""),
    "cm3": ((0x0A,), "pi3 cm3", ""),
    "cm3+": ((0x10,), "pi3 cm3+", "pi3+"),
    "pi4": ((0x11,), "pi4", ""),
    "pi400": ((0x13,), "pi4 pi400", ""),
    "cm4": ((0x14,), "pi4 cm4", ""),
    "cm4s": ((0x15,), "pi4 cm4s", ""),
    "pi5": ((0x17,), "pi5", ""),
    "pi500": ((0x19,), "pi5 pi500", ""),
    "cm5": ((0x18, 0x1A), "pi5 cm5", ""),
}
OLD_STYLE = {"pi1", "cm1"}  # may carry an old-style revision code, without a type field
MODEL_FILTERS = {f for _, sure, unsure in BOARDS.values() for f in (sure + " " + unsure).split()}
CONDITION = re.compile(r"EDID=.+|HDMI:[0-9]+|0x[0-9a-fA-F]+|tryboot|[a-z_]+[0-9]*[=&<>].*")
BOARD_TYPE = re.compile(r"board-type=0x([0-9a-fA-F]+)")
INCLUDE = re.compile(r"[ \t]*include[ \t]+(\S+)[ \t]*")


def filter_of(line: str) -> str | None:
    """The filter a ``[...]`` line sets ("all", "pi4", "gpio4=1"), "?" if malformed; else None."""
    s = line.lstrip(" \t")
    if not s.startswith("["):
        return None
    name, close, rest = s[1:].partition("]")
    return name if close and not rest.strip(" \t") else "?"


def include_of(line: str) -> str | None:
    """The file an ``include FILE`` line names, else None."""
    m = INCLUDE.fullmatch(line)
    return m.group(1) if m else None


def _value(value: str | None) -> frozenset[str]:
    word = "true" if value is None else value
    return frozenset({"on"}) if word in ON_WORDS else frozenset({"off"}) if word in OFF_WORDS else ANY


def _strict(line: str) -> frozenset[str] | None:
    """What the line does to ``random``, read to the letter; None if it does not name it."""
    key, eq, rest = line.lstrip(" \t").partition("=")
    if not eq or key not in DT_KEYS:
        return None
    items = rest.split(",")[1:] if DT_KEYS[key] else rest.split(",")
    found: frozenset[str] | None = None
    for item in items:
        name, has_value, value = item.partition("=")
        if name == "random":
            found = ANY if DT_KEYS[key] else _value(value if has_value else None)
    return found


def _loose(line: str) -> frozenset[str] | None:
    """The same, read by a lenient firmware: no blanks, no BOM, lower case, comment cut."""
    s = re.sub(r"[\s\ufeff]", "", line).lower()
    return None if s.startswith("#") else _strict(s.split("#", 1)[0])


def random_effect(line: str) -> frozenset[str] | None:
    """The values ``random`` may take after this line ({"on"}, {"off"}, "none" for unchanged).

    None when no reading of the line touches ``random``; every reading is merged otherwise.
    """
    readings = [_strict(line[:n]) for n in LINE_LIMITS] + [_loose(line[: LINE_LIMITS[0]])]
    if all(r is None for r in readings):
        return None
    return frozenset[str]().union(*(r if r is not None else {"none"} for r in readings))


@dataclass
class _Filters:
    """The filters in force: the last model filter's boards, conditions, [none]."""

    model: dict[str, Tri] | None = None  # None: no model filter since [all]
    kind: str = ""  # of that model filter: "name", "type" or "unknown"
    cond: bool = False  # a condition that may not hold ([gpio4=1], [0x...], ...)
    none: str = ""  # "block": [none] in force; "shadow": another filter came after it

    def applies(self, board: str) -> Tri:
        if self.none == "block":
            return "no"
        m = "yes" if self.model is None else self.model[board]
        if m == "no":
            return "no"
        return "yes" if m == "yes" and not self.cond and not self.none else "maybe"

    def set(self, name: str) -> None:
        if name == "none":
            self.none = "block"
            return
        if self.none:
            self.none = "shadow"
        members, kind = _members(name)
        if members is None:
            self.cond = True
            return
        if self.model is not None and self.kind != kind:  # replaced, or combined with the last: both
            members = {b: t if t == "no" or self.model[b] == "yes" else "maybe" for b, t in members.items()}
        self.model, self.kind = members, kind
        self.cond = self.cond or kind == "unknown"


def _members(name: str) -> tuple[dict[str, Tri] | None, str]:
    """The boards a model filter selects and its kind; (None, "") for a condition."""
    if m := BOARD_TYPE.fullmatch(name):
        t = int(m.group(1), 16)
        return {b: ("maybe" if b in OLD_STYLE else "yes") if t in types else "no"
                for b, (types, _, _) in BOARDS.items()}, "type"
    if name in MODEL_FILTERS:
        return {b: "yes" if name in sure.split() else "maybe" if name in unsure.split() else "no"
                for b, (_, sure, unsure) in BOARDS.items()}, "name"
    if CONDITION.fullmatch(name):
        return None, ""
    return dict.fromkeys(BOARDS, "maybe"), "unknown"


@dataclass(frozen=True)
class ModelRng:
    value: Literal["on", "off", "maybe"]
    where: str  # "config.txt:57", or "default" when no line set it


@dataclass(frozen=True)
class RngVerdict:
    models: dict[str, ModelRng]
    missing: tuple[str, ...] = ()  # includes that were not found (the firmware skips them)
    problems: tuple[str, ...] = ()  # what makes the reading unsure: no config.txt, a cycle

    @property
    def ok(self) -> bool:
        """Every model definitely has the hardware RNG on."""
        return not self.problems and all(m.value == "on" for m in self.models.values())

    def failing(self) -> dict[str, ModelRng]:
        return {b: m for b, m in self.models.items() if m.value != "on"}


@dataclass
class _Run:
    read: Read
    filters: _Filters = field(default_factory=_Filters)
    values: dict[str, frozenset[str]] = field(default_factory=lambda: dict.fromkeys(BOARDS, frozenset({"on"})))
    where: dict[str, str] = field(default_factory=lambda: dict.fromkeys(BOARDS, "default"))
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    filter_lines: int = 0
    blur: frozenset[str] = frozenset()  # boards whose filters are unsure (see include) until [all]

    def file(self, path: str, cap: frozenset[str], stack: tuple[str, ...], origin: str = "") -> None:
        text = self.read(path)
        if text is None:  # the firmware goes on without it; without config.txt, something is wrong
            if origin:
                self.missing.append(f"{origin}: include {path}: not found")
            else:
                self.problems.append(f"{path}: not found")
            return
        for no, raw in enumerate(text.split("\n"), 1):
            line = raw.removesuffix("\r")
            bom = no == 1 and line.startswith("\ufeff")
            self.line(f"{path}:{no}", line.removeprefix("\ufeff") if bom else line, bom, cap, (*stack, path))

    def line(self, where: str, line: str, bom: bool, cap: frozenset[str], stack: tuple[str, ...]) -> None:
        if (name := filter_of(line)) is not None:
            self.filter_lines += 1
            if bom and not (name == "all" and self.filters == _Filters()):  # a BOM may hide the filter
                name = "?"
            if name == "all":
                self.filters, self.blur = _Filters(), frozenset()
            else:
                self.filters.set(name)
        elif (target := include_of(line)) is not None:
            self.include(where, target, cap, stack)
        elif (effect := random_effect(("\ufeff" if bom else "") + line)) is not None:
            self.assign(where, effect, cap)

    def include(self, where: str, target: str, cap: frozenset[str], stack: tuple[str, ...]) -> None:
        if target in stack:
            self.problems.append(f"{where}: include {target} loops")
            return
        # Whether an include under a filter that does not hold is read at all is not documented.
        unsure = frozenset(b for b in BOARDS if self.filters.applies(b) != "yes")
        before = self.filter_lines
        self.file(target, cap | unsure, stack, where)
        if self.filter_lines != before:  # read or skipped: the filters after it differ for those boards
            self.blur |= unsure

    def assign(self, where: str, effect: frozenset[str], cap: frozenset[str]) -> None:
        for board in BOARDS:
            applies = "maybe" if board in self.blur else self.filters.applies(board)
            if applies == "no":
                continue
            old = self.values[board]
            new = frozenset[str]().union(*(old if o == "none" else {o} for o in effect))
            if applies == "maybe" or board in cap:
                new |= old
            elif "none" not in effect:
                self.where[board] = where
            if new != old:
                self.values[board], self.where[board] = new, where

    def verdict(self) -> RngVerdict:
        models = {b: ModelRng("maybe" if len(v) > 1 else "on" if "on" in v else "off", self.where[b])
                  for b, v in self.values.items()}
        return RngVerdict(models, tuple(self.missing), tuple(self.problems))


def rng_state(read: Read, path: str = "config.txt") -> RngVerdict:
    """Per board, whether ``path`` (and what it includes) leaves the hardware RNG on.

    ``read(name)`` returns the text of a file on the boot partition, or None if it is absent.
    """
    run = _Run(read)
    run.file(path, frozenset(), ())
    return run.verdict()


def check_image_config(read: Read) -> tuple[bool, str, dict[str, Any]]:
    """The boot test's static check: (ok, one line naming the deciding file:line, evidence)."""
    verdict = rng_state(read)
    autoboot = read("autoboot.txt") is not None
    evidence: dict[str, Any] = {
        "models": {b: {"value": m.value, "where": m.where} for b, m in verdict.models.items()},
        "missing_includes": list(verdict.missing), "problems": list(verdict.problems), "autoboot_txt": autoboot}
    if verdict.problems:
        return False, verdict.problems[0], evidence
    if failing := verdict.failing():
        board, m = next(iter(failing.items()))
        more = f" (and {len(failing) - 1} other models)" if len(failing) > 1 else ""
        return False, f"hardware RNG {m.value} on {board}: {m.where}{more}", evidence
    if autoboot:  # autoboot.txt may make the firmware read config.txt from another partition
        return False, "autoboot.txt present: config.txt may be read from another partition", evidence
    wheres = ", ".join(sorted({m.where for m in verdict.models.values()}))
    return True, f"hardware RNG on for all {len(verdict.models)} models ({wheres})", evidence
