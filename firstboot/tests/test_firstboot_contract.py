"""What the build writes to /etc/entropi/firstboot.json is what entropi-firstboot accepts,
for every shipped recipe, and the program's defaults are stages/core/config.py's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from firstboot.entropi_firstboot import config
from stages.build.firstboot_unit import FirstbootUnit, firstboot_settings
from stages.core.recipe import load_recipe
from tests.conftest import ROOT
from tests.support.images import context, make_image

RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.fixture(scope="module")
def program() -> ModuleType:
    """The program's settings module (firstboot/entropi_firstboot/config.py), as it runs on the Pi."""
    return config


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_the_settings_a_recipe_builds_are_accepted_by_entropi_firstboot(
        tmp_path: Path, program: ModuleType, recipe: Path) -> None:
    g = make_image(tmp_path / "image")
    FirstbootUnit().run(context(tmp_path, g, load_recipe(recipe)))
    written = g.host("/etc/entropi/firstboot.json")
    loaded = program.load_config(str(written))
    settings = json.loads(written.read_text())
    assert set(settings) == set(program.DEFAULTS)  # every key set, none unknown
    assert [k["type"] for k in loaded["key_types"]] == load_recipe(recipe).ssh.key_types
    assert {k: v for k, v in loaded.items() if k != "key_types"} == \
        {k: v for k, v in settings.items() if k != "key_types"}


def test_a_setting_the_program_rejects_fails_the_contract(tmp_path: Path, program: ModuleType) -> None:
    bad = tmp_path / "firstboot.json"
    bad.write_text(json.dumps({"key_types": [{"type": "ecdsa", "bits": 512}]}))
    with pytest.raises(program.ConfigError, match="ecdsa bits"):
        program.load_config(str(bad))


def test_the_programs_defaults_are_config_py_defaults(tmp_path: Path, program: ModuleType) -> None:
    recipe = tmp_path / "defaults.toml"
    recipe.write_text('[base]\nsource = "debian"\n')
    ctx = context(tmp_path, None, load_recipe(recipe))
    ctx.state.boot_mount = "/boot/firmware"  # today's Raspberry Pi OS layout
    assert firstboot_settings(ctx) == program.DEFAULTS
