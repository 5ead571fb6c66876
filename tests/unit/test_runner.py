"""Stage runner order: preflight all, run in order, tear down started stages in reverse."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.recipe import load_recipe
from stages.core.runner import Context, Stage, run_stages
from tests.conftest import ROOT


class Rec(Stage):
    def __init__(self, name: str, log: list[str], fail: str = "") -> None:
        self.name, self.log, self.fail = name, log, fail

    def check(self, ctx: Context) -> None:
        self.log.append(f"check {self.name}")
        if self.fail == "check":
            raise UserError("host", "missing tool", hint="install it")

    def run(self, ctx: Context) -> None:
        self.log.append(f"run {self.name}")
        if self.fail == "run":
            raise RuntimeError("boom")

    def teardown(self, ctx: Context) -> None:
        self.log.append(f"teardown {self.name}")
        if self.fail == "teardown":
            raise RuntimeError("teardown boom")


def _ctx(tmp_path: Path) -> Context:
    return Context(config=load_recipe(ROOT / "recipes" / "debian-arm64.toml"), out_dir=tmp_path, work_dir=tmp_path)


def test_all_checks_run_before_any_stage(tmp_path: Path) -> None:
    log: list[str] = []
    run_stages([Rec("a", log), Rec("b", log)], _ctx(tmp_path))
    assert log == ["check a", "check b", "run a", "run b", "teardown b", "teardown a"]


def test_failed_preflight_runs_nothing(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(UserError):
        run_stages([Rec("a", log), Rec("b", log, fail="check")], _ctx(tmp_path))
    assert not [x for x in log if x.startswith("run")]


def test_failure_tears_down_only_started_stages_in_reverse(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        run_stages([Rec("a", log), Rec("b", log, fail="run"), Rec("c", log)], _ctx(tmp_path))
    assert log[-2:] == ["teardown b", "teardown a"]
    assert "run c" not in log and "teardown c" not in log


def test_a_failing_teardown_does_not_stop_the_others(tmp_path: Path) -> None:
    log: list[str] = []
    run_stages([Rec("a", log), Rec("b", log, fail="teardown")], _ctx(tmp_path))
    assert log[-2:] == ["teardown b", "teardown a"]


def test_manifest_records_stage_timings_and_recipe_hash(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    manifest = run_stages([Rec("a", [])], ctx, manifest_path=tmp_path / "m.json")
    assert [s["name"] for s in manifest["stages"]] == ["a"]
    assert manifest["recipe_sha256"] == ctx.config.recipe_sha256
    assert (tmp_path / "m.json").exists()


class Skipping(Rec):
    def skip(self, config: Config) -> str | None:
        return "nothing to do here"


class NeedsTool(Rec):
    def tools(self, config: Config) -> list[str]:
        return ["sh", "entropi-no-such-tool"]


def test_a_skipped_stage_is_neither_checked_nor_run_and_the_manifest_says_why(tmp_path: Path) -> None:
    log: list[str] = []
    manifest = run_stages([Rec("a", log), Skipping("b", log)], _ctx(tmp_path))
    assert "check b" not in log and "run b" not in log and "teardown b" not in log
    assert manifest["stages"][1] == {"name": "b", "skipped": "nothing to do here"}


def test_a_missing_host_tool_fails_preflight_before_anything_runs(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(UserError, match="missing host tools: entropi-no-such-tool"):
        run_stages([Rec("a", log), NeedsTool("b", log)], _ctx(tmp_path))
    assert not [x for x in log if x.startswith("run")]


def test_the_manifest_records_the_tools_each_stage_ran_with(tmp_path: Path) -> None:
    class Tooled(Rec):
        def tools(self, config: Config) -> list[str]:
            return ["sh"]

    manifest = run_stages([Tooled("a", [])], _ctx(tmp_path))
    assert manifest["stages"][0]["tools"] == ["sh"] and "seconds" in manifest["stages"][0]
