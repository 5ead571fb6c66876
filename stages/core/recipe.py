"""Reading a recipe: TOML against the declarations in config.py into a frozen ``Config``.

Unknown sections and keys, wrong types and impossible values raise ``UserError`` naming the
file, the key and the fix. ``describe_settings`` renders the same declarations as
documentation; ``resolved_toml`` prints a recipe's resolved settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.config import SECTIONS, Config
from stages.core.errors import UserError


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
