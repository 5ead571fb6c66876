"""The settings file /etc/entropi/firstboot.json: defaults and validation."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from .device import read_text

CONFIG_PATH = "/etc/entropi/firstboot.json"

DEFAULTS: Dict[str, Any] = {
    "key_types": [
        {"type": "ed25519"},
        {"type": "ecdsa", "bits": 521},
        {"type": "rsa", "bits": 4096},
    ],
    "wait_timeout": 300,
    "on_timeout": "continue",
    "min_entropy": 2048,
    "boot_dir": "/boot/firmware",
}

_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


class ConfigError(Exception):
    """The configuration file cannot be used."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def default_config() -> Dict[str, Any]:
    """DEFAULTS with the key types in their checked form (what a missing file means)."""
    config = dict(DEFAULTS)
    config["key_types"] = check_key_types(config["key_types"], "")
    return config


def load_config(path: str) -> Dict[str, Any]:
    """Return the configuration with defaults filled in; raise ConfigError."""
    config = dict(DEFAULTS)
    text = read_text(path)
    if text is None:
        if os.path.exists(path):
            raise ConfigError("%s: cannot be read" % path)
        return default_config()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError("%s: not valid JSON: %s" % (path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError("%s: must hold a JSON object" % path)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError("%s: unknown key(s): %s" % (path, ", ".join(unknown)))
    config.update(data)

    where = "%s: " % path
    if not _is_number(config["wait_timeout"]) or config["wait_timeout"] < 0:
        raise ConfigError(where + "wait_timeout must be a number of seconds >= 0")
    if config["on_timeout"] not in ("continue", "fail"):
        raise ConfigError(where + 'on_timeout must be "continue" or "fail"')
    if not isinstance(config["min_entropy"], int) or isinstance(config["min_entropy"], bool) \
            or config["min_entropy"] < 0:
        raise ConfigError(where + "min_entropy must be an integer >= 0")
    boot_dir = config["boot_dir"]
    if not isinstance(boot_dir, str) or not boot_dir.startswith("/"):
        raise ConfigError(where + "boot_dir must be an absolute path")
    config["key_types"] = check_key_types(config["key_types"], where)
    return config


def check_key_types(value: Any, where: str) -> List[Dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where + "key_types must be a non-empty list")
    seen = set()
    result = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ConfigError(where + 'each key_types entry needs a "type"')
        extra = sorted(set(item) - {"type", "bits"})
        if extra:
            raise ConfigError(where + "key_types: unknown key(s): %s" % ", ".join(extra))
        ktype = item["type"]
        if ktype not in _KEY_TYPES:
            raise ConfigError(where + "key_types: unsupported type %r (use %s)"
                              % (ktype, ", ".join(_KEY_TYPES)))
        if ktype in seen:
            raise ConfigError(where + "key_types: %s listed twice" % ktype)
        seen.add(ktype)
        bits = item.get("bits")
        if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool)):
            raise ConfigError(where + "key_types: bits of %s must be an integer" % ktype)
        if ktype == "ecdsa" and bits not in (None, 256, 384, 521):
            raise ConfigError(where + "key_types: ecdsa bits must be 256, 384 or 521")
        if ktype == "rsa" and bits is not None and not 2048 <= bits <= 16384:
            raise ConfigError(where + "key_types: rsa bits must be 2048..16384")
        if ktype == "ed25519" and bits not in (None, 256):
            raise ConfigError(where + "key_types: ed25519 has no bits setting")
        result.append({"type": ktype, "bits": bits})
    return result
