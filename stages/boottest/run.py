"""`invoke boot-test`: what to boot, and how, read from what the build recorded.

The task only parses its options and calls ``boot_test``: this module builds the recipe
when asked (with a throwaway login key when none is given), reads the image's manifest
and turns it into a BootTest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.boottest.cards import BootTest
from stages.build.pipeline import build
from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.layers import value_layer
from stages.core.processes import run
from stages.core.recipe import load_recipe


def throwaway_key(out_dir: Path, name: str) -> Path:
    """A fresh passphrase-less ed25519 key (and its .pub) in ``out_dir``, for the login check."""
    key = (out_dir / f".{name}-boot-test-key").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "entropi-boot-test", "-f", str(key)],
        hint="ssh-keygen (openssh-client) makes the throwaway login key; or pass --key")
    return key


def build_for_boot_test(recipe: str, key: str, sets: Sequence[str] = ()) -> tuple[Path, str]:
    """Build ``recipe`` with ``sets`` (--set KEY=VALUE), adding a throwaway key's .pub when no
    ``key`` is given. -> (image, key)"""
    config: Config = load_recipe(recipe, sets)
    out = Path(config.output.dir)
    if not key:
        made = throwaway_key(out, config.name)
        key = str(made)
        keys = [*config.users.authorized_keys, str(made.with_suffix(".pub"))]
        config = load_recipe(recipe, sets, [value_layer("boot-test", {"users.authorized_keys": keys})])
    build(config, out)
    return out / f"{config.name}.img", key


def read_manifest(image: Path) -> dict[str, Any]:
    """The manifest the build wrote beside ``image`` (NAME.manifest.json)."""
    path = image.with_name(image.name.removesuffix(".img") + ".manifest.json")
    if not path.is_file():
        raise UserError(str(image), f"no {path.name} beside the image",
                        hint="boot-test reads what the build recorded; boot an image made by invoke build "
                             "(or boot-test --recipe R)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def password_expected(manifest: dict[str, Any], image: Path) -> bool:
    """Whether sshd takes passwords, as the accounts stage decided and recorded it."""
    allowed = manifest.get("ssh", {}).get("password_authentication")
    if not isinstance(allowed, bool):
        raise UserError(str(image), "the manifest does not record ssh.password_authentication",
                        hint="rebuild the image with this version of entropi")
    return allowed


def boot_test_for(image: Path, key: str, manifest: dict[str, Any]) -> BootTest:
    """The BootTest of ``image``, its settings taken from the build's ``manifest``."""
    settings = manifest["settings"]
    return BootTest(image, manifest["image"]["arch"], key=Path(key) if key else None,
                    user=settings["users"]["name"], out_dir=image.parent,
                    timeout=settings["boot_test"]["timeout"], base_keys=base_keys_for(manifest),
                    reset_at_key=settings["ssh"]["key_types"][-1],
                    growroot=manifest["image"].get("first_boot_expansion") == "entropi-growroot.service",
                    key_count=len(settings["ssh"]["key_types"]))


def boot_test(image: str, recipe: str, key: str, sets: Sequence[str] = ()) -> dict[str, Any]:
    """Boot-test ``image`` (or the output of building ``recipe`` with ``sets``); returns the report."""
    if not image and not recipe:
        raise UserError("boot-test", "nothing to boot", hint="pass --image out/NAME.img or --recipe R")
    if sets and not recipe:
        raise UserError("boot-test", "--set changes a recipe, and no --recipe is given",
                        hint="boot-test --recipe R --set KEY=VALUE builds R with the change first")
    if recipe:
        built, key = build_for_boot_test(recipe, key, sets)
        image = str(built)
    path = Path(image)
    check_image(path)
    manifest = read_manifest(path)
    return boot_test_for(path, key, manifest).run(password_expected=password_expected(manifest, path))


def base_keys_for(manifest: dict[str, Any]) -> list[str]:
    """Host keys of the base an output was built from, when its ``manifest`` names a cached base."""
    try:
        base = next(i["path"] for i in manifest.get("inputs", []) if i["label"] == "base image")
        info = json.loads(Path(base + ".json").read_text())
        return [" ".join(k.split()[:2]) for k in info.get("host_keys", [])]
    except (OSError, ValueError, StopIteration, KeyError):
        return []


def check_image(image: Path) -> None:
    if not image.is_file():
        raise UserError(str(image), "no such image", hint="build it first: invoke build --recipe R")
