"""config.txt read with the firmware's semantics: the hardware RNG per board, on the real files
of other projects (/work/shared/reference/config-txt, see its SOURCES.md) before and after the
build's edit, and on the filter, include and value rules one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.textedit.config_read import BOARDS, RngVerdict, check_image_config, rng_state
from stages.textedit.config_txt import enable_hwrng_config

REFERENCE = Path("/work/shared/reference/config-txt")
TPM = ["dtparam=spi=on", "dtoverlay=tpm-slb9670"]
PI4 = {"pi4", "pi400", "cm4", "cm4s"}  # the boards that read [pi4]
PI3 = {"pi3", "pi3+", "cm3", "cm3+"}
PI5 = {"pi5", "pi500", "cm5"}


def _boards(value: str, where: str, **others: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """Every board at (value, where), except those named (pi3_ for pi3+)."""
    out = dict.fromkeys(BOARDS, (value, where))
    out.update({b.replace("_", "+"): v for b, v in others.items()})
    return out


def _seen(verdict: RngVerdict) -> dict[str, tuple[str, str]]:
    return {b: (m.value, m.where) for b, m in verdict.models.items()}


def _state(text: str, **files: str) -> RngVerdict:
    return rng_state({"config.txt": text, **files}.get)


def _values(text: str, **files: str) -> dict[str, str]:
    return {b: m.value for b, m in _state(text, **files).models.items()}


def _only(boards: set[str], value: str, rest: str = "on") -> dict[str, str]:
    return {b: value if b in boards else rest for b in BOARDS}


DEFAULT = _boards("on", "default")
OFF_ON_CM4 = _boards("on", "default", cm4=("off", "config.txt:6"))
# file: (what the reader says today, why, the includes it reports missing)
EXPECTED: dict[str, tuple[dict[str, tuple[str, str]], str, list[str]]] = {
    "adv-alias-config.txt": (_boards("off", "config.txt:6"), "device_tree_param=random=off is last, in [all]", []),
    "adv-crlf-config.txt": (DEFAULT, "no random line: the base DT's default (on); CRLF read as LF", []),
    "adv-include-filters-nonl-config.txt": (
        OFF_ON_CM4, "off in [cm4]; on under [none] never applies; [gpio4=1] combines with the [cm4] still in force",
        ["config.txt:13: include usercfg.txt: not found"]),
    "adv-pi4-off-combined-config.txt": (
        _boards("off", "config.txt:4", **dict.fromkeys(PI4, ("off", "config.txt:12"))),
        "random=off item in [all], again in [pi4] for the boards that read [pi4]", []),
    "batocera-bcm2711-config.txt": (DEFAULT, "no random line; [DPI] is followed at once by [all]", []),
    "dietpi-config.txt": (DEFAULT, "no random line (sd_poll_once, audio=off only)", []),
    "dietpi-legacy-config.txt": (DEFAULT, "no random line (spi, i2c off only)", []),
    "haos-rpi-config.txt": (DEFAULT, "no random line", []),
    "haos-rpi5-config.txt": (DEFAULT, "no random line", []),
    "haos-yellow-config.txt": (DEFAULT, "no random line; ends with [all]", []),
    "libreelec-legacy-config.txt": (DEFAULT, "no random line; indented settings",
                                    ["config.txt:73: include distroconfig.txt: not found"]),
    "libreelec-rpi4-config.txt": (DEFAULT, "no random line; #include is a comment",
                                  ["config.txt:31: include distroconfig.txt: not found"]),
    "recalbox-config.txt": (DEFAULT, "no random line", []),
    "rpios-pigen-master-config.txt": (DEFAULT, "no random line", []),
    "ubuntu-focal-config.txt": (DEFAULT, "no random line", ["config.txt:67: include syscfg.txt: not found",
                                                            "config.txt:68: include usercfg.txt: not found"]),
    "ubuntu-noble-config.txt": (DEFAULT, "no random line", []),
    "umbrel-config.txt": (DEFAULT, "no random line", []),
    "wlanpi-config.txt": (DEFAULT, "no random line; starts inside [cm4]", []),
}


def _text(name: str) -> str:
    return (REFERENCE / name).read_bytes().decode()


def test_every_reference_file_has_an_expected_verdict() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in REFERENCE.glob("*.txt"))
    assert len(EXPECTED) == 18 and len(BOARDS) == 18


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_file_reads_as_worked_out_by_hand_before_the_edit(name: str) -> None:
    expected, _why, missing = EXPECTED[name]
    verdict = _state(_text(name))
    assert _seen(verdict) == expected
    assert list(verdict.missing) == missing and not verdict.problems
    assert verdict.ok == all(v == "on" for v, _ in expected.values())


@pytest.mark.parametrize("extra", [[], TPM], ids=["hwrng", "hwrng+tpm"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_file_reads_on_for_every_board_after_the_edit(name: str, extra: list[str]) -> None:
    out = enable_hwrng_config(_text(name), extra)
    ours = [no for no, line in enumerate(out.splitlines(), 1) if line == "dtparam=random=on"]
    assert len(ours) == 1 and ours[0] > len(out.splitlines()) - 3  # the last line, or before the extra ones
    assert _seen(_state(out)) == _boards("on", f"config.txt:{ours[0]}")
    assert enable_hwrng_config(out, extra) == out


def test_random_off_in_a_final_pi4_section_is_off_for_the_pi4_family_only_then_on_after_the_edit() -> None:
    text = _text("rpios-pigen-master-config.txt") + "[pi4]\ndtparam=random=off\n"
    line = f"config.txt:{len(text.splitlines())}"
    verdict = _state(text)
    assert _seen(verdict) == _boards("on", "default", **dict.fromkeys(PI4, ("off", line)))
    assert not verdict.ok and set(verdict.failing()) == PI4
    assert _state(enable_hwrng_config(text)).ok


def test_the_alias_the_old_edit_kept_is_removed() -> None:
    out = enable_hwrng_config(_text("adv-alias-config.txt"))
    assert "device_tree_param" not in out.replace("# device_tree_param=", "")
    assert out == _text("adv-alias-config.txt").replace("device_tree_param=random=off\n", "")


def test_combined_alias_keeps_its_other_items_and_its_name() -> None:
    assert enable_hwrng_config("device_tree_param=audio=on,random=off\n") == (
        "device_tree_param=audio=on\ndtparam=random=on\n")


@pytest.mark.parametrize("text", [
    "dtparam=random=on\nDTPARAM=random=off\n",  # a lenient firmware would read it
    "dtparam=random=on\ndtoverlay=foo,random=off\n",  # an overlay's item: not ours to judge
    "[all]\ninclude extra.txt\n",  # the included file ends inside a filter
    "dtparam=random=on  \n",  # a trailing blank may be part of the value
    "DTPARAM=random=off\n[pi4] # Pi 4 only\narm_boost=1\n",  # a filter line with more after it
])
def test_edit_ends_with_a_line_the_reader_trusts(text: str) -> None:
    out = enable_hwrng_config(text)
    assert _state(out, **{"extra.txt": "dtparam=random=off\n[pi4]\n"}).ok
    assert enable_hwrng_config(out) == out


# -- filters -------------------------------------------------------------------------------


def test_a_model_filter_replaces_the_last_one() -> None:
    assert _values("[pi4]\n[pi3]\ndtparam=random=off\n") == _only(PI3, "off")
    assert _values("[pi0]\ndtparam=random=off\n") == _only({"pi0", "pi0w", "pi02"}, "off", "on") | {"cm0": "maybe"}


def test_all_resets_every_filter() -> None:
    assert _values("[pi4]\n[gpio4=1]\n[none]\n[all]\ndtparam=random=off\n") == _only(set(), "on", "off")


def test_none_stops_settings_and_a_filter_after_it_makes_them_maybe() -> None:
    assert _values("[none]\ndtparam=random=off\n") == _only(set(), "off")
    assert _values("[none]\n[pi5]\ndtparam=random=off\n") == _only(PI5, "maybe")


@pytest.mark.parametrize("condition", ["gpio4=1", "0x12345678", "EDID=DEL-DELL_U2422H", "HDMI:0", "tryboot",
                                       "boot_partition=2", "partition=1", "boot_arg1&4"])
def test_a_condition_makes_a_setting_maybe_and_combines_with_a_model_filter(condition: str) -> None:
    assert _values(f"[{condition}]\ndtparam=random=off\n") == _only(set(), "on", "maybe")
    assert _values(f"[{condition}]\n[pi5]\ndtparam=random=off\n") == _only(PI5, "maybe")
    assert _values(f"[pi5]\n[{condition}]\ndtparam=random=on\n") == _only(set(), "off", "on")  # on stays on


@pytest.mark.parametrize("unknown", ["DPI", "PI4", "pi6", "board-type=20", "pi4] [pi3"])
def test_an_unknown_or_malformed_filter_makes_every_board_maybe(unknown: str) -> None:
    assert _values(f"[{unknown}]\ndtparam=random=off\n") == _only(set(), "on", "maybe")


def test_board_type_selects_one_model_and_its_mix_with_model_names_is_maybe() -> None:
    assert _values("[board-type=0x14]\ndtparam=random=off\n") == _only({"cm4"}, "off")
    assert _values("[pi4]\n[board-type=0x13]\ndtparam=random=off\n") == _only({"pi400"}, "off")
    assert _values("[board-type=0x11]\n[pi400]\ndtparam=random=off\n") == _only({"pi400"}, "maybe")


def test_rows_only_the_newest_documentation_has_are_maybe() -> None:
    assert _values("[pi3+]\ndtparam=random=off\n") == _only({"pi3+"}, "off") | {"cm3+": "maybe"}


# -- values and lines ----------------------------------------------------------------------


@pytest.mark.parametrize(("line", "value"), [
    ("dtparam=random=on", "on"), ("dtparam=random", "on"), ("dtparam=random=1", "on"), ("dtparam=random=yes", "on"),
    ("dtparam=random=true", "on"), ("dtparam=random=okay", "on"), ("dtparam=random=off", "off"),
    ("dtparam=random=0", "off"), ("dtparam=random=no", "off"), ("dtparam=random=false", "off"),
    ("dtparam=audio=on,random=off", "off"), ("dtparam=random=off,audio=on", "off"),
    ("dtparam=random=on,random=off", "off"), ("device_tree_param=random=off", "off"), ("  dtparam=random=off", "off"),
    ("dtparam=random=On", "maybe"), ("dtparam=random=", "maybe"), ("dtparam=random=off # no", "maybe"),
    ("dtparam=random=off ", "maybe"), ("dtparam = random=off", "maybe"), ("DTPARAM=random=off", "maybe"),
    ("\ufeffdtparam=random=off", "maybe"), ("dtoverlay=foo,random=off", "maybe"),
    ("device_tree_overlay=,random=off", "maybe"), ("#dtparam=random=off", "on"), ("dtparam=audio=off", "on"),
    ("dtparam=randomx=off", "on"), ("dtoverlay=random", "on"),
])
def test_one_line_after_the_default(line: str, value: str) -> None:
    assert set(_values(line + "\n").values()) == {value}


def test_last_assignment_wins_and_a_dtparam_after_an_overlay_still_reaches_the_base_dt() -> None:
    assert set(_values("dtparam=random=off\ndtparam=random=on\n").values()) == {"on"}
    assert set(_values("dtoverlay=vc4-kms-v3d\ndtparam=random=off\n").values()) == {"off"}


def test_what_lies_past_the_line_limit_is_cut() -> None:
    pad = "dtparam=" + "audio=on," * 11  # 107 characters before the random item
    assert set(_values(pad + "random=off\n").values()) == {"on"}
    between = "dtparam=" + "audio=on," * 8  # 80: cut by the old 78-character limit, not by 98
    assert set(_values(between + "random=off\n").values()) == {"maybe"}


def test_crlf_no_final_newline_and_a_bom_before_a_filter() -> None:
    assert set(_values("[pi4]\r\ndtparam=random=off").values()) == {"on", "off"}
    assert _values("[pi4]\r\ndtparam=random=off") == _only(PI4, "off")
    assert _values("\ufeff[all]\ndtparam=random=off\n") == _only(set(), "on", "off")
    assert _values("\ufeff[pi4]\ndtparam=random=off\n") == _only(set(), "on", "maybe")


# -- include -------------------------------------------------------------------------------


def test_an_included_file_is_read_in_place_and_named_in_the_verdict() -> None:
    verdict = _state("include extra.txt\n", **{"extra.txt": "gpu_mem=16\ndtparam=random=off\n"})
    assert _seen(verdict) == _boards("off", "extra.txt:2")
    assert _values("include extra.txt\ndtparam=random=off\n", **{"extra.txt": "[pi4]\n"}) == _only(PI4, "off")


def test_an_include_under_a_filter_that_may_not_hold_is_maybe_past_it() -> None:
    values = _values("[pi4]\ninclude extra.txt\ndtparam=random=on\n", **{"extra.txt": "[all]\ndtparam=random=off\n"})
    assert values == _only(PI4, "on", "maybe")


def test_a_missing_include_is_reported_not_fatal() -> None:
    verdict = _state("include nowhere.txt\n")
    assert verdict.ok and verdict.missing == ("config.txt:1: include nowhere.txt: not found",)


def test_an_include_cycle_is_stopped_and_is_a_problem() -> None:
    verdict = _state("include a.txt\n", **{"a.txt": "include config.txt\n"})
    assert not verdict.ok and verdict.problems == ("a.txt:1: include config.txt loops",)


def test_no_config_txt_is_a_problem() -> None:
    verdict = rng_state({}.get)
    assert not verdict.ok and verdict.problems == ("config.txt: not found",)


# -- the boot test's check -----------------------------------------------------------------


def test_check_image_config_passes_an_edited_file_and_names_its_line() -> None:
    ok, detail, evidence = check_image_config({"config.txt": enable_hwrng_config(_text("adv-alias-config.txt"))}.get)
    assert ok and detail == "hardware RNG on for all 18 models (config.txt:5)"
    assert evidence["models"]["pi5"] == {"value": "on", "where": "config.txt:5"}


def test_check_image_config_fails_naming_the_deciding_line() -> None:
    ok, detail, evidence = check_image_config({"config.txt": _text("adv-include-filters-nonl-config.txt")}.get)
    assert not ok and detail == "hardware RNG off on cm4: config.txt:6"
    assert evidence["missing_includes"] == ["config.txt:13: include usercfg.txt: not found"]
    ok, detail, _ = check_image_config({"config.txt": "[gpio4=1]\ndtparam=random=off\n"}.get)
    assert not ok and detail == "hardware RNG maybe on pi0: config.txt:2 (and 17 other models)"


def test_check_image_config_fails_without_config_txt_or_with_autoboot_txt() -> None:
    assert check_image_config({}.get)[:2] == (False, "config.txt: not found")
    ok, detail, evidence = check_image_config({"config.txt": "", "autoboot.txt": "[all]\nboot_partition=2\n"}.get)
    assert not ok and "autoboot.txt" in detail and evidence["autoboot_txt"] is True
