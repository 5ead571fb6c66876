"""Where a recipe's values come from: its file, the recipes it ``extends``, and ``--set``.

A recipe is read as a list of layers, lowest first: the base of an ``extends`` chain, each
recipe extending it, the recipe file itself, then one layer per ``--set KEY=VALUE``.
``merge`` lays them over each other (tables merged key by key, lists and scalars replaced)
and remembers which layer gave each dotted key, so that errors name the file or option a
value came from, relative paths resolve against that layer, and the manifest can say where
each setting came from (``file:``, ``extends:``, ``--set``, or ``default``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import UserError

SET = "--set"


@dataclass(frozen=True)
class Layer:
    """One source of recipe values."""

    origin: str        # what the manifest records: "file:<path>", "extends:<path>", "--set"
    where: str         # what errors name: the file, or "--set KEY"
    base_dir: Path     # relative paths in this layer resolve against it
    data: dict[str, Any]
    raw: bytes = b""   # the file's bytes (part of the recipe's digest)
    keyed: bool = False  # ``where`` already names the key (a --set layer)

    def error(self, what: str, *, key: str = "", hint: str = "") -> UserError:
        """A UserError located in this layer (``error: <file>: <key>: ...`` or ``error: --set KEY: ...``)."""
        return UserError(self.where, what, key="" if self.keyed else key, hint=hint)


def _display(path: Path) -> str:
    return os.path.normpath(path)


def _parse_file(path: Path, where: str) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(where, f"cannot read: {e.strerror}", hint="check the path and its permissions") from None
    try:
        return raw, tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(where, "not UTF-8 text", hint="save the recipe as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(where, f"not valid TOML: {e}", hint="check the quoting and [section] lines") from None


def file_layers(path: Path) -> list[Layer]:
    """The recipe at ``path`` and every recipe it extends, base first. Cycles and missing
    files are UserErrors naming the files."""
    if not path.is_file():
        raise UserError(str(path), "no such recipe file", hint="pass --recipe with an existing .toml file")
    chain: list[Layer] = []
    seen: list[Path] = []
    current, where = path, str(path)
    while True:
        seen.append(current.resolve())
        raw, data = _parse_file(current, where)
        origin = f"file:{where}" if not chain else f"extends:{where}"
        parent = data.pop("extends", None)
        chain.append(Layer(origin, where, current.parent, data, raw))
        if parent is None:
            return list(reversed(chain))
        if not isinstance(parent, str) or not parent:
            raise UserError(where, f"expected the path of a recipe file, got {parent!r}", key="extends",
                            hint='write extends = "other.toml" at the top, before any [section]')
        base = current.parent / Path(parent).expanduser()
        if base.resolve() in seen:
            loop = " -> ".join([*(layer.where for layer in chain), _display(base)])
            raise UserError(where, f"extends {parent!r}, which is already in the chain ({loop})", key="extends",
                            hint="a recipe cannot extend itself, directly or through others; remove one extends")
        if not base.is_file():
            raise UserError(where, f"no such recipe file {_display(base)}", key="extends",
                            hint=f"the path is relative to the directory of {where}")
        current, where = base, _display(base)


def parse_value(text: str) -> Any:
    """A --set VALUE: a TOML value (``true``, ``3``, ``"2G"``, ``["a", "b"]``), else the text itself."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["v"] if list(doc) == ["v"] else text  # "1\nx = 2" sets one value, not two keys


def set_layers(items: Sequence[str]) -> list[Layer]:
    """One layer per ``KEY=VALUE`` (KEY dotted: ``output.name``), relative paths against the current directory."""
    layers = []
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(SET, f"expected KEY=VALUE, got {item!r}",
                            hint="write e.g. --set output.name=lab (KEY as in the recipe: section.setting)")
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise UserError(f"{SET} {key}", "unknown setting",
                            hint="KEY is section.setting as in the recipe, e.g. output.name; see `invoke recipe-doc`")
        data = {section: {name: parse_value(text.strip())}}
        layers.append(Layer(SET, f"{SET} {key}", Path.cwd(), data, keyed=True))
    return layers


def value_layer(origin: str, values: Mapping[str, Any]) -> Layer:
    """Values a task sets itself (``{"users.authorized_keys": [...]}``), named ``origin`` in errors
    and in the manifest; relative paths against the current directory."""
    data: dict[str, Any] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    return Layer(origin, origin, Path.cwd(), data)


def merge(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[str, Layer]]:
    """Lay ``layers`` over each other, lowest first: tables merged key by key (recursively),
    anything else replaced. Returns the merged data and, for each dotted key, the layer that
    gave its value (for a table: the last layer that wrote into it)."""
    merged: dict[str, Any] = {}
    origins: dict[str, Layer] = {}
    for layer in layers:
        _merge_into(merged, layer.data, layer, origins, "")
    return merged, origins


def _merge_into(into: dict[str, Any], data: dict[str, Any], layer: Layer, origins: dict[str, Layer],
                prefix: str) -> None:
    for name, value in data.items():
        key = prefix + name
        if isinstance(value, dict):
            if not isinstance(into.get(name), dict):
                into[name] = {}
            origins[key] = layer  # the last layer to write into the table
            _merge_into(into[name], value, layer, origins, key + ".")
            continue
        into[name] = value
        for below in [k for k in origins if k.startswith(key + ".")]:
            del origins[below]  # a table replaced by a value
        origins[key] = layer
