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

from stages.boottest.session import CARDS, BootTest
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
    """The manifest the build wrote beside ``image`` (NAME.manifest.json); {} for an image entropi
    did not build (its facts are then read from the image itself)."""
    path = image.with_name(image.name.removesuffix(".img") + ".manifest.json")
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(str(path), f"not valid JSON: {e}", hint="rebuild the image, or move the file away") from None
    return data


def password_expected(manifest: dict[str, Any], image: Path) -> bool | None:
    """Whether sshd takes passwords, as the accounts stage decided and recorded it; None without a
    manifest (then the image's own sshd configuration, as the probe reads it, is the expectation)."""
    if not manifest:
        return None
    allowed = manifest.get("ssh", {}).get("password_authentication")
    if not isinstance(allowed, bool):
        raise UserError(str(image), "the manifest does not record ssh.password_authentication",
                        hint="rebuild the image with this version of entropi")
    return allowed


def boot_test_for(image: Path, key: str, manifest: dict[str, Any], cards: Sequence[str] = CARDS,
                  tamper: bool = True) -> BootTest:
    """The BootTest of ``image``: settings from the build's ``manifest`` when there is one."""
    settings = manifest.get("settings", {})
    expansion = manifest.get("image", {}).get("first_boot_expansion", "unknown")
    key_types = settings.get("ssh", {}).get("key_types", [])
    return BootTest(image, manifest.get("image", {}).get("arch", ""), key=Path(key) if key else None,
                    out_dir=image.parent, timeout=settings.get("boot_test", {}).get("timeout", 900),
                    manifest=manifest, grows=expansion not in (None, "none"),
                    reset_at_key=key_types[-1] if key_types else "", key_count=len(key_types), cards=cards,
                    password_expected=password_expected(manifest, image), tamper=tamper)


def parse_cards(text: str) -> tuple[str, ...]:
    """``--cards B,A``: the cards to boot, in the boot test's order; all of them for ""."""
    if not text.strip():
        return CARDS
    names = [w.strip().upper() for w in text.split(",")]
    unknown = [repr(n) if n else "an empty name" for n in names if n not in CARDS]
    if unknown:
        raise UserError("boot-test", f"--cards {text!r}: {', '.join(unknown)} is not a card",
                        hint=f"name cards from {','.join(CARDS)}, e.g. --cards B or --cards B,A")
    return tuple(c for c in CARDS if c in names)


def boot_test(image: str, recipe: str, key: str, sets: Sequence[str] = (), cards: str = "") -> dict[str, Any]:
    """Boot-test ``image`` (or the output of building ``recipe`` with ``sets``), booting ``cards``
    (``--cards``, default all); returns the report."""
    chosen = parse_cards(cards)
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
    return boot_test_for(path, key, read_manifest(path), cards=chosen).run()


def check_image(image: Path) -> None:
    if not image.is_file():
        raise UserError(str(image), "no such image", hint="build it first: invoke build --recipe R")
