"""The Stage contract: state fields are provided before they are read in every shipped
recipe, stages touch only the fields they declare, and the real libguestfs handle and
the directory-backed fake both have every call of the GuestHandle Protocol."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stages.build import edit_open
from stages.build.accounts import Accounts
from stages.build.edit_close import EditClose
from stages.build.edit_open import EditOpen
from stages.build.expansion import Expansion
from stages.build.firstboot_unit import FirstbootUnit
from stages.build.hwrng import Hwrng
from stages.build.overlays import Overlays
from stages.build.pipeline import build_stages
from stages.build.secrets import Secrets
from stages.core.recipe import load_recipe
from stages.core.runner import Context, Stage, unprovided_reads
from stages.core.state import FIELDS, BuildState
from stages.image.handle import GuestHandle
from tests.conftest import ROOT
from tests.support.fakeguest import FakeGuest, FakeLaunch
from tests.support.images import HASH, KEY, config, context, make_image

RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_field_a_stage_reads_is_provided_by_an_earlier_stage(recipe: Path) -> None:
    cfg = load_recipe(recipe)
    stages = build_stages(cfg)
    for stage in stages:
        assert stage.reads | stage.provides <= FIELDS, stage.name
    assert unprovided_reads(stages, cfg) == []


def test_a_stage_list_in_the_wrong_order_is_caught() -> None:
    cfg = load_recipe(RECIPES[0])
    stages = build_stages(cfg)
    assert "work copy: base_image" in unprovided_reads(list(reversed(stages)), cfg)
    assert "open libguestfs: g" not in unprovided_reads(stages, cfg)


class TracedState(BuildState):
    """BuildState that logs which fields are read, set, and released (set to None)."""

    def __getattribute__(self, name: str) -> Any:
        if name in FIELDS and "log" in object.__getattribute__(self, "__dict__"):
            object.__getattribute__(self, "log").append(("read", name))
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if "log" in self.__dict__:
            self.__dict__["log"].append(("release" if value is None else "set", name))
        object.__setattr__(self, name, value)


def traced(state: BuildState) -> TracedState:
    copy = TracedState(**{name: getattr(state, name) for name in FIELDS})
    copy.__dict__["log"] = []
    return copy


STAGES: list[tuple[Callable[[], Stage], dict[str, Any]]] = [
    (Hwrng, {"hwrng__tpm": "slb9670"}),
    (Secrets, {}),
    (Accounts, {"users__name": "alice", "users__password_hash": HASH, "users__authorized_keys": [KEY]}),
    (FirstbootUnit, {}),
    (Overlays, {}),
    (Expansion, {}),
    (EditClose, {}),
]


@pytest.mark.parametrize(("make", "overrides"), STAGES, ids=lambda x: getattr(x, "__name__", ""))
def test_a_stage_touches_only_the_fields_it_declares(tmp_path: Path, make: Callable[[], Stage],
                                                     overrides: dict[str, Any]) -> None:
    stage = make()
    ctx: Context = context(tmp_path, make_image(tmp_path / "image"), config(**overrides))
    ctx.state = state = traced(ctx.state)
    stage.check(ctx)
    stage.run(ctx)
    log = state.__dict__["log"]
    assert {n for kind, n in log if kind == "read"} <= stage.reads | stage.provides
    assert {n for kind, n in log if kind == "set"} <= stage.provides
    assert {n for kind, n in log if kind == "release"} <= stage.reads | stage.provides


def test_edit_open_touches_only_the_fields_it_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edit_open, "accel", lambda: "tcg")
    monkeypatch.setattr(edit_open, "appliance_setup", lambda: "packaged")
    ctx = context(tmp_path, None)
    ctx.state.guest_launch = FakeLaunch(make_image(tmp_path / "image"))  # type: ignore[assignment]
    ctx.state = state = traced(ctx.state)
    stage = EditOpen()
    stage.run(ctx)
    assert {n for kind, n in state.__dict__["log"] if kind == "read"} <= stage.reads | stage.provides
    assert {n for kind, n in state.__dict__["log"] if kind == "set"} <= stage.provides


def _protocol_calls() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(GuestHandle).items()
            if inspect.isfunction(fn) and not name.startswith("_")}


def _same_parameters(cls: type) -> list[str]:
    wrong = []
    for name, sig in _protocol_calls().items():
        method = getattr(cls, name, None)
        if method is None or list(inspect.signature(method).parameters) != list(sig.parameters):
            wrong.append(name)
    return wrong


def test_the_fake_has_every_protocol_call_with_its_parameters() -> None:
    assert len(_protocol_calls()) >= 25
    assert _same_parameters(FakeGuest) == []


def test_the_real_libguestfs_handle_has_every_protocol_call_with_its_parameters() -> None:
    guestfs = pytest.importorskip("guestfs", reason="python3-guestfs is not installed (./ci/setup)")
    assert _same_parameters(guestfs.GuestFS) == []
