"""Recipe variants: --set KEY=VALUE on top, extends = "other.toml" underneath, and where each value came from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stages.build.accounts import authorized_keys
from stages.core.errors import UserError
from stages.core.layers import Layer, merge, parse_value
from stages.core.recipe import load_recipe, resolved_toml
from stages.core.runner import Context, run_stages
from tests.conftest import ROOT

DEBIAN = ROOT / "recipes" / "debian-arm64.toml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1ZrvVjM5cVfyV0cXR2x1m8tYqJbMzmw1M6rk1HtBzM ada@lab"


def _error(path: Path, sets: list[str] | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(path, sets or [])
    line = info.value.render()
    assert "\n" not in line and "(hint: " in line
    return line


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("3", 3), ('"2G"', "2G"), ('["~/.ssh/id_ed25519.pub"]', ["~/.ssh/id_ed25519.pub"]),
    ("lab", "lab"), ("+768M", "+768M"), ("pi-01", "pi-01"), ("", ""), ("1\nx = 2", "1\nx = 2"),
])
def test_set_value_is_toml_and_a_bare_word_is_a_string(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_set_values_reach_the_config_with_their_types() -> None:
    config = load_recipe(DEBIAN, ["image.shrink=false", "ssh.rsa_bits=4096", "image.grow=+1G", 'output.name="lab"',
                                  'packages.install=["jq", "curl"]', "users.hostname=pi-01"])
    assert config.image.shrink is False and config.ssh.rsa_bits == 4096 and config.image.grow == "+1G"
    assert config.name == "lab" and config.packages.install == ["jq", "curl"] and config.users.hostname == "pi-01"


def test_later_set_wins_over_an_earlier_one() -> None:
    assert load_recipe(DEBIAN, ["output.name=a", "output.name=b"]).name == "b"


@pytest.mark.parametrize(("item", "expect"), [
    ("output.nme=x", r"^error: --set output\.nme: unknown setting \(hint: output takes name, dir, compress, bmap\)$"),
    ("outpt.name=x", r"^error: --set outpt\.name: unknown section \(hint: sections are base, "),
    ("name=x", r"^error: --set name: unknown setting \(hint: KEY is section\.setting"),
    ("output.name", r"^error: --set: expected KEY=VALUE, got 'output\.name' \(hint: write e\.g\. --set output"),
    ("ssh.rsa_bits=1024", r"^error: --set ssh\.rsa_bits: expected an integer >= 2048, got 1024 \(hint: use 2048"),
    ("ssh.rsa_bits=big", r"^error: --set ssh\.rsa_bits: expected an integer, got 'big' \(hint: write it like "
                         r"--set ssh\.rsa_bits='42'\)$"),
    ("output.name=2024", r"^error: --set output\.name: expected a string, got 2024 \(hint: .*'\"text\"'\)$"),
    ("hwrng.enable=yes", r"^error: --set hwrng\.enable: expected true or false, got 'yes'"),
    ("output.compress=rar", r"^error: --set output\.compress: expected one of 'xz', 'zst', 'none', got 'rar'"),
    ("users.authorized_keys=~/k.pub", r"^error: --set users\.authorized_keys: expected a list of strings"),
    ("users.name={a=1}", r"^error: --set users\.name: expected a string, got \{'a': 1\}"),
    ("ssh.password_authentication=yes", r"^error: --set ssh\.password_authentication: password logins on but"),
])
def test_bad_set_is_one_line_naming_the_option(item: str, expect: str) -> None:
    sets = [item, 'users.password_hash="!"'] if "password_auth" in item else [item]
    line = _error(DEBIAN, sets)
    assert re.search(expect, line), line


def test_unknown_set_key_is_the_error_an_unknown_key_in_the_file_gives(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(DEBIAN.read_text() + '\ndir_name = "x"\n')  # lands in [output]
    in_file = _error(recipe)
    by_set = _error(DEBIAN, ['output.dir_name="x"'])
    assert in_file.removeprefix(f"error: {recipe}: output.dir_name: ") == by_set.removeprefix(
        "error: --set output.dir_name: ")


def test_default_recipe_with_a_key_and_a_name_from_the_command_line_is_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    config = load_recipe(ROOT / "pipeline.toml", ['users.authorized_keys=["~/.ssh/id_ed25519.pub"]',
                                                  "output.name=lab"])
    assert config.name == "lab" and config.base.release == "Raspberry Pi OS Lite (64-bit)"
    assert config.users.authorized_keys == [str(tmp_path / ".ssh" / "id_ed25519.pub")]
    assert authorized_keys(Context(config, tmp_path, tmp_path)) == [KEY]
    assert config.origins["output.name"] == "--set" and config.origins["users.authorized_keys"] == "--set"
    assert config.origins["base.release"] == f"file:{ROOT / 'pipeline.toml'}"
    assert config.origins["ssh.rsa_bits"] == "default"


def test_set_paths_are_relative_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_recipe(DEBIAN, ['users.authorized_keys=["keys/a.pub", "' + KEY + '"]', 'overlays.extra=["ovl"]'])
    assert config.users.authorized_keys == [str(tmp_path / "keys" / "a.pub"), KEY]
    assert config.overlays.extra == [str(tmp_path / "ovl")]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_merges_tables_replaces_lists_and_resolves_paths_where_they_were_written(tmp_path: Path) -> None:
    _write(tmp_path / "base" / "base.toml",
           '[base]\nsource = "debian"\n[image]\ngrow = "+1G"\nshrink = true\n'
           '[packages]\ninstall = ["a", "b"]\n[users]\nauthorized_keys = ["keys/ops.pub"]\n'
           '[overlays]\nextra = ["ovl"]\n')
    child = _write(tmp_path / "lab.toml", 'extends = "base/base.toml"\n[image]\ngrow = "+2G"\n'
                                          '[packages]\ninstall = ["c"]\n')
    config = load_recipe(child)
    assert config.image.grow == "+2G" and config.image.shrink is True
    assert config.packages.install == ["c"]
    assert config.users.authorized_keys == [str(tmp_path / "base" / "keys" / "ops.pub")]
    assert config.overlays.extra == [str(tmp_path / "base" / "ovl")]
    assert config.name == "lab"
    origins = config.origins
    assert origins["image.grow"] == f"file:{child}" and origins["packages.install"] == f"file:{child}"
    assert origins["image.shrink"] == f"extends:{tmp_path / 'base' / 'base.toml'}"
    assert origins["image.expand"] == "default"


def test_extends_chains_and_set_goes_on_top(tmp_path: Path) -> None:
    _write(tmp_path / "c.toml", '[base]\nsource = "debian"\n[output]\ncompress = "zst"\nbmap = false\n')
    _write(tmp_path / "sub" / "b.toml", 'extends = "../c.toml"\n[output]\ncompress = "none"\ndir = "b-out"\n')
    a = _write(tmp_path / "sub" / "a.toml", 'extends = "b.toml"\n[output]\nname = "a"\n')
    config = load_recipe(a, ["output.dir=cli-out"])
    assert (config.name, config.output.compress, config.output.bmap, config.output.dir) == ("a", "none", False,
                                                                                           "cli-out")
    assert config.origins["output.bmap"] == f"extends:{tmp_path / 'c.toml'}"
    assert config.origins["output.compress"] == f"extends:{tmp_path / 'sub' / 'b.toml'}"
    assert config.origins["output.dir"] == "--set"
    assert 'compress = "none"  # extends:' in resolved_toml(config) and 'dir = "cli-out"  # --set' in resolved_toml(
        config)


def test_extends_cycle_is_one_line_naming_the_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    _write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    line = _error(a)
    assert re.search(rf"^error: {tmp_path}/b\.toml: extends: extends 'a\.toml', which is already in the chain "
                     rf"\({a} -> {tmp_path}/b\.toml -> {a}\)", line), line
    assert "extends 'self.toml'" in _error(_write(tmp_path / "self.toml", 'extends = "self.toml"\n'))


def test_extends_of_a_missing_file_names_both_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.toml", 'extends = "nope.toml"\n')
    line = _error(a)
    assert line == (f"error: {a}: extends: no such recipe file {tmp_path}/nope.toml "
                    f"(hint: the path is relative to the directory of {a})")


@pytest.mark.parametrize(("text", "expect"), [
    ("extends = 3\n", r"extends: expected the path of a recipe file, got 3 \(hint: write extends = "),
    ('[image]\nextends = "b.toml"\n', r"image\.extends: unknown setting \(hint: .*extends goes at the top"),
])
def test_misplaced_or_mistyped_extends_is_explained(tmp_path: Path, text: str, expect: str) -> None:
    assert re.search(expect, _error(_write(tmp_path / "a.toml", text)))


def test_a_bad_value_in_a_base_recipe_names_the_base_file(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.toml", '[base]\nsource = "debian"\n[ssh]\nrsa_bits = 1024\n')
    line = _error(_write(tmp_path / "a.toml", 'extends = "base.toml"\n'))
    assert line.startswith(f"error: {base}: ssh.rsa_bits: expected an integer >= 2048")


def test_merge_records_the_layer_of_every_key_and_replaces_lists_whole() -> None:
    low = Layer("file:low.toml", "low.toml", Path("/"), {"image": {"grow": "+1G", "shrink": True},
                                                          "packages": {"install": ["a", "b"]}})
    high = Layer("--set", "--set packages.install", Path("/"), {"packages": {"install": ["c"]}}, keyed=True)
    data, origins = merge([low, high])
    assert data == {"image": {"grow": "+1G", "shrink": True}, "packages": {"install": ["c"]}}
    assert {k: v.origin for k, v in origins.items()} == {
        "image": "file:low.toml", "image.grow": "file:low.toml", "image.shrink": "file:low.toml",
        "packages": "--set", "packages.install": "--set"}


def test_manifest_records_where_each_setting_came_from(tmp_path: Path) -> None:
    config = load_recipe(DEBIAN, ["output.name=lab"])
    manifest = run_stages([], Context(config, tmp_path, tmp_path))
    origin = manifest["settings_origin"]
    assert origin["output.name"] == "--set" and origin["base.source"] == f"file:{DEBIAN}"
    assert origin["boot_test.timeout"] == "default"
    assert set(origin) == {f"{s}.{k}" for s, values in manifest["settings"].items() for k in values}


def test_recipe_hash_changes_with_set_and_with_the_extended_file(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.toml", '[base]\nsource = "debian"\n')
    a = _write(tmp_path / "a.toml", 'extends = "base.toml"\n')
    first = load_recipe(a).recipe_sha256
    assert load_recipe(a, ["output.name=x"]).recipe_sha256 != first
    base.write_text('[base]\nsource = "debian"\narch = "armhf"\n')
    assert load_recipe(a).recipe_sha256 != first


def test_recipe_check_cli_takes_set(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "invoke", "recipe-check", "--recipe", "pipeline.toml",
                         "--set", f'users.authorized_keys=["{KEY}"]', "--set", "output.name=lab"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert 'name = "lab"  # --set' in ok.stdout and f'authorized_keys = ["{KEY}"]  # --set' in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "invoke", "recipe-check", "--set", "output.nme=lab"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: --set output.nme: unknown setting (hint: output takes name, dir, compress, bmap)"]


def test_a_table_where_a_value_belongs_is_a_type_error_in_the_file_too(tmp_path: Path) -> None:
    line = _error(_write(tmp_path / "a.toml", '[base]\nsource = "debian"\n[users]\nname = {a = 1}\n'))
    assert line.startswith(f"error: {tmp_path}/a.toml: users.name: expected a string, got {{'a': 1}}")


def test_set_on_boot_test_needs_a_recipe() -> None:
    from stages.boottest.run import boot_test

    with pytest.raises(UserError, match=r"^error: boot-test: --set changes a recipe, and no --recipe is given"):
        boot_test("out/x.img", "", "", ["output.name=x"])


def test_another_base_from_the_command_line_empties_the_recipes_own(tmp_path: Path) -> None:
    image = tmp_path / "local.img"
    line = _error(ROOT / "pipeline.toml", [f"base.path={image}"])
    assert line == ("error: --set base.path: set exactly one of base.release, base.url, base.path (found 2) "
                    '(hint: keep one and empty the others, e.g. release = "" or --set base.release=)')
    config = load_recipe(ROOT / "pipeline.toml", ["base.release=", f"base.path={image}"])
    assert (config.base.release, config.base.path) == ("", str(image))
