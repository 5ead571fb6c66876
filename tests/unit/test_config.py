"""Recipe schema: good recipes load, bad ones give one precise line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.checks import parse_size
from stages.core.errors import UserError
from stages.core.recipe import describe_settings, iter_settings, load_recipe, resolved_toml
from tests.conftest import FIXTURES, ROOT

BAD = sorted((FIXTURES / "bad").glob("*.toml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <regex>'"
    return first[len("# expect: "):]


def test_corpus_has_at_least_twelve_distinct_bad_recipes() -> None:
    assert len(BAD) >= 12
    assert len({_expected(p) for p in BAD}) == len(BAD)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_recipe_names_file_key_and_fix(path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_recipe(path)
    line = info.value.render()
    assert "\n" not in line
    assert line.startswith(f"error: {path}: ")
    assert "(hint: " in line
    assert re.search(_expected(path), line), line


@pytest.mark.parametrize("path", BAD[:3], ids=[p.stem for p in BAD[:3]])
def test_recipe_check_cli_exits_2_without_traceback(path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "invoke", "recipe-check", "--recipe", str(path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


def test_missing_recipe_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no such recipe file \(hint: pass --recipe"):
        load_recipe(tmp_path / "nope.toml")


@pytest.mark.parametrize("recipe", ["pipeline.toml", *[f"recipes/{p.name}" for p in (ROOT / "recipes").glob("*.toml")]])
def test_shipped_recipes_are_valid(recipe: str) -> None:
    config = load_recipe(ROOT / recipe)
    assert config.name


def test_defaults_and_paths_resolve_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('[base]\npath = "img/base.img"\n[overlays]\nextra = ["more"]\n')
    config = load_recipe(tmp_path / "r.toml")
    assert config.base.path == str(tmp_path / "img" / "base.img")
    assert config.overlays.extra == [str(tmp_path / "more")]
    assert config.ssh.rsa_bits == 4096 and config.ssh.key_types == ["ed25519", "ecdsa", "rsa"]
    assert config.users.lock_root is True
    assert config.name == "r"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_recipe(ROOT / "recipes" / "debian-arm64.toml")
    with pytest.raises(AttributeError):
        config.ssh.rsa_bits = 1  # type: ignore[misc]


def test_recipe_hash_changes_with_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[base]\nsource = "debian"\n')
    b.write_text('[base]\nsource = "debian"\narch = "armhf"\n')
    assert load_recipe(a).recipe_sha256 != load_recipe(b).recipe_sha256


def test_doc_lists_every_setting_with_default_and_help() -> None:
    doc = describe_settings()
    for key, f, _ in iter_settings():
        section, name = key.split(".")
        assert f"[{section}]" in doc
        assert re.search(rf"^  {name} = ", doc, re.M), key
        assert f.metadata["help"] in doc


def test_resolved_settings_reload_to_the_same_config(tmp_path: Path) -> None:
    config = load_recipe(ROOT / "recipes" / "debian-arm64.toml")
    text = "\n".join(line for line in resolved_toml(config).splitlines() if not line.startswith("#"))
    (tmp_path / "again.toml").write_text(text)
    again = load_recipe(tmp_path / "again.toml")
    assert again.as_dict() == config.as_dict()


def test_sizes_parse_binary_units() -> None:
    assert parse_size("+768M") == 768 << 20
    assert parse_size("1G") == 1 << 30
    with pytest.raises(ValueError):
        parse_size("1T")


def test_an_unreachable_min_entropy_is_located_where_the_watermark_was_lowered(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[base]\nsource = "debian"\n')
    with pytest.raises(UserError) as info:
        load_recipe(recipe, ["rngd.fill_percent=25"])
    assert info.value.render().startswith("error: --set rngd.fill_percent: min_entropy 2048 can never be reached")
    assert load_recipe(recipe, ["rngd.fill_percent=25", "firstboot.min_entropy=1024"]).firstboot.min_entropy == 1024
    assert load_recipe(recipe, ["rngd.package=none", "firstboot.min_entropy=4096"]).firstboot.min_entropy == 4096
