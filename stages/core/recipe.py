"""Reading a recipe: TOML against the declarations in config.py into a frozen ``Config``.

The recipe, the recipes it extends and ``--set`` values are layers (layers.py) merged first.
Unknown sections and keys, wrong types and impossible values raise ``UserError`` naming the
file (or the --set option) the value came from, the key and the fix. ``describe_settings``
renders the same declarations as documentation; ``resolved_toml`` prints a recipe's resolved
settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stages.core.checks import KEY_PREFIXES, LEGACY_POOL_BITS, fill_watermark, min_entropy_reachable
from stages.core.config import SECTIONS, Config
from stages.core.errors import UserError
from stages.core.layers import Layer, file_layers, merge, set_layers


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


def _cross_checks(values: dict[str, dict[str, Any]], fail: Callable[..., UserError]) -> None:
    """Rules between settings; ``fail(key, what, hint)`` locates the error where ``key`` was set."""
    base = values["base"]
    chosen = [k for k in ("release", "url", "path") if base[k]]
    source = base["source"]
    if not source:
        if len(chosen) != 1:
            raise fail("base", f"set exactly one of base.release, base.url, base.path (found {len(chosen)})",
                       "or set base.source = \"debian\" for a Pi-style image built from Debian" if not chosen else
                       f"keep one and empty the others, e.g. {chosen[0]} = \"\" or --set base.{chosen[0]}=")
    elif source != "debian" and not base[source]:
        raise fail(f"base.{source}", f"base.source is {source!r} but base.{source} is empty", f"set base.{source}")
    elif source == "debian" and chosen:
        raise fail(f"base.{chosen[0]}", f"base.source is 'debian' but base.{chosen[0]} is set too",
                   "remove it, or drop base.source")
    if base["sha256"] and base["sha256_url"]:
        raise fail("base.sha256", "both sha256 and sha256_url are set", "keep one of them")
    if base["signature_url"] and not base["signing_key"]:
        raise fail("base.signing_key", "a signature is given but no key to check it against",
                   "set base.signing_key to the pinned public key file")
    if values["ssh"]["password_authentication"] == "yes" and values["users"]["password_hash"] in ("!", "*"):
        raise fail("ssh.password_authentication", "password logins on but the user's password is locked",
                   "give users.password_hash or set it to 'no'")
    if not values["ssh"]["key_types"]:
        raise fail("ssh.key_types", "no host key types", "keep at least \"ed25519\"")
    _check_min_entropy(values, fail)


def _check_min_entropy(values: dict[str, dict[str, Any]], fail: Callable[..., UserError]) -> None:
    """min_entropy is waited for on kernels with a 4096-bit pool (before 5.18), which rngd fills
    only up to fill_percent of it; the image's kernels are checked again at build time (hwrng)."""
    rngd, percent = values["rngd"], values["rngd"]["fill_percent"]
    watermark = None if rngd["package"] == "none" else fill_watermark(LEGACY_POOL_BITS, percent)
    source = (f"rngd.fill_percent = {percent} of the {LEGACY_POOL_BITS}-bit pool of kernels before 5.18, "
              "the only ones that wait for min_entropy")
    problem = min_entropy_reachable(values["firstboot"]["min_entropy"], watermark, source, percent)
    if problem:
        raise fail("firstboot.min_entropy", *problem, at=("firstboot.min_entropy", "rngd.fill_percent"))


def load_recipe(path: str | Path, sets: Sequence[str] = (), extra: Sequence[Layer] = ()) -> Config:
    """Parse and validate a recipe file, the recipes it extends, then ``sets`` (``KEY=VALUE``
    from --set) and ``extra`` layers on top. Raises UserError for every problem."""
    recipe = Path(path)
    files = file_layers(recipe)
    layers = [*files, *set_layers(sets), *extra]
    for layer in layers:
        _check_shape(layer)
    data, origins = merge(layers)
    values: dict[str, dict[str, Any]] = {}
    for key, f, tp in iter_settings():
        section, name = key.split(".")
        given = data.get(section, {})
        value = _checked(key, given[name], f, tp, origins[key]) if name in given else _default(f)
        values.setdefault(section, {})[name] = value

    def fail(key: str, what: str, hint: str, at: Sequence[str] = ()) -> UserError:
        """The error about ``key``, located where ``key`` (or the first of ``at`` that was set) came from."""
        where = next((origins[k] for k in (*at, key) if k in origins), files[-1])
        return where.error(what, key=key, hint=hint)

    _cross_checks(values, fail)
    sections = {s: SECTIONS[s](**values[s]) for s in SECTIONS}
    added = [(layer.where, layer.data) for layer in layers[len(files):]]
    digest = hashlib.sha256(b"".join(layer.raw for layer in files) + repr(added).encode()).hexdigest()
    where_from = {key: origins[key].origin if key in origins else "default" for key, _, _ in iter_settings()}
    return Config(recipe=recipe, recipe_sha256=digest, origins=where_from, **sections)


def _check_shape(layer: Layer) -> None:
    """Every section of ``layer`` is a known table, every key in it a known setting."""
    known = [key for key, _, _ in iter_settings()]
    for section, table in layer.data.items():
        if section not in SECTIONS:
            raise layer.error("unknown section", key=section,
                              hint=f"sections are {', '.join(SECTIONS)}; see `invoke recipe-doc`")
        if not isinstance(table, dict):
            raise layer.error("expected a [section] table", key=section,
                              hint=f"write [{section}] followed by its settings")
        for name in table:
            if f"{section}.{name}" not in known:
                close = [k.split(".")[1] for k in known if k.startswith(section + ".")]
                top = "; extends goes at the top, before any [section]" if name == "extends" else ""
                raise layer.error("unknown setting", key=f"{section}.{name}",
                                  hint=f"{section} takes {', '.join(close)}{top}")


def _checked(key: str, value: Any, f: dataclasses.Field[Any], tp: Any, layer: Layer) -> Any:
    """``value`` as given in ``layer``, type- and value-checked, its paths resolved against the layer."""
    if not _typed(value, tp):
        like = f"--set {key}='{_example(tp)}'" if layer.keyed else f"{key.split('.')[1]} = {_example(tp)}"
        raise layer.error(f"expected {_type_name(tp)}, got {value!r}", key=key, hint=f"write it like {like}")
    check = f.metadata["check"]
    problem = check(value) if check is not None else None
    if problem:
        raise layer.error(problem[0], key=key, hint=problem[1])
    kind = f.metadata["path"]
    if not kind:
        return value
    if isinstance(value, list):
        return [_resolved(v, kind, layer.base_dir) for v in value]
    return _resolved(value, kind, layer.base_dir) if value else value


def _resolved(value: str, kind: bool | str, base_dir: Path) -> str:
    """A path setting's value made absolute (``~`` expanded, relative to ``base_dir``); an SSH
    key line in a ``keys`` setting stays as it is."""
    if kind == "keys" and value.startswith(KEY_PREFIXES):
        return value
    path = Path(value).expanduser()
    return str(path) if path.is_absolute() else str((base_dir / path).resolve())


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
    """The resolved settings of a recipe, as TOML (what `recipe-check` prints); a value from
    another file (extends) or from --set says so in a comment."""
    lines = [f"# {config.recipe} (sha256 {config.recipe_sha256[:16]})"]
    for section, values in config.as_dict().items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            origin = config.origins.get(f"{section}.{k}", "default")
            shown = origin != "default" and origin != f"file:{config.recipe}"
            lines.append(f"{k} = {_toml(v)}" + (f"  # {origin}" if shown else ""))
        lines.append("")
    return "\n".join(lines)
