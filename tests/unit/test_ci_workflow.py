"""ci/entropi-images.yml, the workflow users copy: actionlint (pinned in requirements.txt, with shellcheck on
the run: scripts) reports nothing; its matrix builds the offline recipes and the default one, each with the
workflow's own --set for the login key; the boot report goes to the job summary even when the boot test failed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.core.recipe import load_recipe
from tests.conftest import ROOT

WORKFLOW = ROOT / "ci" / "entropi-images.yml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1ZrvVjM5cVfyV0cXR2x1m8tYqJbMzmw1M6rk1HtBzM ci@runner"
MATRIX = ["recipes/debian-arm64.toml", "recipes/debian-trixie-arm64.toml", "pipeline.toml"]


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("actionlint")
    assert tool.exists(), "actionlint is pinned in requirements.txt: run ./ci/setup"
    assert shutil.which("shellcheck"), "actionlint checks run: scripts with shellcheck: run ./ci/setup"
    return subprocess.run([str(tool), "-no-color", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120)


def job() -> dict[str, Any]:
    image: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())["jobs"]["image"]
    return image


def step(name: str) -> dict[str, Any]:
    return next(s for s in job()["steps"] if s.get("name") == name)


def test_actionlint_reports_nothing_in_the_users_workflow() -> None:
    res = actionlint(WORKFLOW)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


def test_actionlint_does_report_a_broken_copy(tmp_path: Path) -> None:
    """The negative control: the same linter run on a copy with an unknown matrix key and an unquoted $HOME."""
    broken = tmp_path / "entropi-images.yml"
    text = WORKFLOW.read_text().replace("RECIPE: ${{ matrix.recipe }}", "RECIPE: ${{ matrix.recipes }}")
    text = text.replace('ENTROPI_CACHE="$HOME/.cache/entropi" ./ci/setup', "ENTROPI_CACHE=$HOME/.cache ./ci/setup")
    broken.write_text(text)
    out = actionlint(broken).stdout
    assert re.search(r'property "recipes" is not defined in object type \{recipe: string\}', out), out
    assert "SC2086" in out, out


def test_the_matrix_is_the_offline_recipes_and_the_default_one() -> None:
    assert job()["strategy"]["matrix"]["recipe"] == MATRIX
    assert job()["env"]["RECIPE"] == "${{ matrix.recipe }}"


def build_sets(runner_temp: Path) -> list[str]:
    """The --set values of the workflow's build command, as the runner's shell would pass them."""
    script = step("Build")["run"].replace("\\\n", " ").replace("$RUNNER_TEMP", str(runner_temp))
    argv = shlex.split(next(line for line in script.splitlines() if "invoke build" in line))
    assert argv[argv.index("--recipe") + 1] == "$RECIPE"
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]


@pytest.mark.parametrize("recipe", MATRIX)
def test_every_recipe_of_the_matrix_with_the_workflows_key_is_valid(recipe: str, tmp_path: Path) -> None:
    assert (ROOT / recipe).is_file(), recipe
    (tmp_path / "id_ed25519.pub").write_text(KEY + "\n")
    sets = build_sets(tmp_path)
    assert sets == [f'users.authorized_keys=["{tmp_path}/id_ed25519.pub"]']
    config = load_recipe(ROOT / recipe, sets)
    assert config.users.authorized_keys == [str(tmp_path / "id_ed25519.pub")]
    assert config.origins["users.authorized_keys"] == "--set"


def test_the_boot_report_goes_to_the_job_summary_even_when_the_boot_test_failed() -> None:
    names = [s.get("name") for s in job()["steps"]]
    summary = step("Boot report in the job summary")
    assert names.index("Boot test") < names.index("Boot report in the job summary")
    assert summary["if"] == "always()"
    assert 'cat "out/$NAME.boot-report.md" >> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    assert summary["env"]["NAME"] == step("Boot test")["env"]["NAME"] == "${{ steps.build.outputs.name }}"
    upload = next(s for s in job()["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert "out/*.boot-report.md" in upload["with"]["path"].split()
