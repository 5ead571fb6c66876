"""`invoke boot-test` reads what the build recorded: the manifest decides, not the task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages.boottest.run import boot_test, boot_test_for, parse_cards, password_expected, read_manifest
from stages.core.errors import UserError


def _manifest(password: bool, expansion: str | None = None) -> dict[str, Any]:
    return {"settings": {"users": {"name": "ada"}, "boot_test": {"timeout": 321},
                         # "auto" here: the recorded decision below, not the setting, is what counts
                         "ssh": {"key_types": ["ed25519", "ecdsa", "rsa"], "password_authentication": "auto"}},
            "image": {"arch": "armhf", "first_boot_expansion": expansion},
            "ssh": {"password_authentication": password}}


def _image(tmp_path: Path, manifest: dict[str, Any] | None) -> Path:
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 512)
    if manifest is not None:
        (tmp_path / "x.manifest.json").write_text(json.dumps(manifest))
    return image


@pytest.mark.parametrize("recorded", [True, False])
def test_password_login_expectation_is_the_one_the_accounts_stage_recorded(tmp_path: Path, recorded: bool) -> None:
    image = _image(tmp_path, _manifest(recorded))
    assert password_expected(read_manifest(image), image) is recorded


def test_a_manifest_without_the_recorded_decision_is_a_user_error(tmp_path: Path) -> None:
    manifest = _manifest(True)
    del manifest["ssh"]
    image = _image(tmp_path, manifest)
    with pytest.raises(UserError, match="does not record ssh.password_authentication"):
        password_expected(read_manifest(image), image)


def test_boot_test_arguments_come_from_the_manifest(tmp_path: Path) -> None:
    image = _image(tmp_path, _manifest(False, "entropi-growroot.service"))
    run = boot_test_for(image, str(tmp_path / "key"), read_manifest(image))
    assert (run.arch, run.timeout, run.key, run.password_expected) == ("armhf", 321, tmp_path / "key", False)
    assert (run.reset_at_key, run.key_count, run.grows, run.out_dir) == ("rsa", 3, True, tmp_path)


def test_an_image_without_a_manifest_is_judged_from_what_it_holds(tmp_path: Path) -> None:
    image = _image(tmp_path, None)
    assert read_manifest(image) == {}
    run = boot_test_for(image, "", {})
    assert (run.arch, run.key_count, run.password_expected, run.key) == ("", 0, None, None)
    assert run.grows  # "unknown" expansion: whether the root grew is checked, never assumed


def test_no_image_at_all_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such image"):
        boot_test(str(tmp_path / "missing.img"), "", "")
    with pytest.raises(UserError, match="nothing to boot"):
        boot_test("", "", "")


def test_the_known_password_replaces_the_users_hash_and_nothing_else(tmp_path: Path) -> None:
    from stages.boottest.prepare import _set_password
    from tests.support.fakeguest import FakeGuest

    g = FakeGuest.image(tmp_path)
    g.mkdir_p("/etc")
    g.write("/etc/shadow", b"root:!:20786:0:99999:7:::\npi:$6$old$x:20786:0:99999:7:::\n")
    assert _set_password(g, "pi", "$6$new$y") and not _set_password(g, "nobody", "$6$new$y")
    assert g.pread("/etc/shadow", 4096, 0).decode().splitlines() == [
        "root:!:20786:0:99999:7:::", "pi:$6$new$y:20786:0:99999:7:::"]


@pytest.mark.parametrize(("given", "cards"), [("", ("B", "A", "C")), ("B", ("B",)), ("a, b", ("B", "A")),
                                              ("C,B,A", ("B", "A", "C"))])
def test_cards_are_booted_in_the_boot_tests_order(given: str, cards: tuple[str, ...]) -> None:
    assert parse_cards(given) == cards


@pytest.mark.parametrize(("given", "said"), [("B,X", "'X' is not a card"), ("B,,A", "an empty name is not a card"),
                                             ("D", "'D' is not a card")])
def test_an_unknown_card_is_one_line_naming_it_before_anything_is_built(tmp_path: Path, given: str, said: str) -> None:
    with pytest.raises(UserError) as e:
        boot_test("", str(tmp_path / "recipe-that-does-not-exist.toml"), "", (), given)
    assert said in str(e.value) and "--cards B or --cards B,A" in str(e.value) and "\n" not in str(e.value)
