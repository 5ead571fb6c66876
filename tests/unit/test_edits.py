"""Pure edits: config.txt (hold-out shapes), RNG module choice, accounts, sshd, rngd, cmdline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stages.edits import (
    add_user,
    cmdline_without_init,
    enable_hwrng_config,
    lock_root,
    modules_load_conf,
    pick_rng_module,
    pick_tpm_rng_module,
    rename_user,
    rngd_defaults,
    set_password_hash,
    sshd_dropin,
    user_entry,
)
from stages.errors import UserError
from tests.conftest import FIXTURES

CONFIGS = sorted((FIXTURES / "config_txt").glob("*.txt"))
TPM = ["dtparam=spi=on", "dtoverlay=tpm-slb9670"]
OURS = re.compile(r"^\s*(dtparam=.*\b(random|spi)\b|dtoverlay=tpm-slb9670)")


def _read(name: str) -> str:
    return (FIXTURES / "config_txt" / name).read_bytes().decode()


def _effective(text: str) -> list[tuple[str, str]]:
    """(section, item) for every active setting; combined dtparams split into items."""
    section, out = "[all]", []
    for line in text.lstrip("\ufeff").splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s
        elif s.startswith("dtparam="):
            out.extend((section, f"dtparam={item}") for item in s[len("dtparam="):].split(","))
        elif s and not s.startswith("#"):
            out.append((section, s))
    return out


def _last_section(text: str) -> str:
    heads = [s.strip() for s in text.splitlines() if s.strip().startswith("[")]
    return heads[-1] if heads else "[all]"


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


# -- config.txt: properties on every hold-out sample ------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.parametrize("extra", [[], TPM], ids=["hwrng", "hwrng+tpm"])
def test_config_is_idempotent(path: Path, extra: list[str]) -> None:
    once = enable_hwrng_config(path.read_bytes().decode(), extra)
    assert enable_hwrng_config(once, extra) == once


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.parametrize("extra", [[], TPM], ids=["hwrng", "hwrng+tpm"])
def test_config_each_setting_exactly_once_and_in_the_final_all_section(path: Path, extra: list[str]) -> None:
    out = enable_hwrng_config(path.read_bytes().decode(), extra)
    active = _effective(out)
    assert [x for x in active if "random" in x[1]] == [("[all]", "dtparam=random=on")]
    assert _last_section(out) == "[all]"
    if extra:
        assert [x for x in active if "spi" in x[1]] == [("[all]", "dtparam=spi=on")]
        assert [x for x in active if "tpm" in x[1]] == [("[all]", "dtoverlay=tpm-slb9670")]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_untouched_lines_kept_byte_for_byte_and_in_order(path: Path) -> None:
    text = path.read_bytes().decode()
    out = enable_hwrng_config(text, TPM)
    before = text.lstrip("\ufeff").splitlines(keepends=True)
    after = out.lstrip("\ufeff").splitlines(keepends=True)
    untouched = [line for line in before if not OURS.match(line)]
    if untouched and not untouched[-1].endswith("\n"):  # only an unterminated last line may gain an eol
        untouched[-1] += "\r\n" if "\r\n" in text else "\n"
    assert _is_subsequence(untouched, after)
    assert out.startswith("\ufeff") == text.startswith("\ufeff")
    assert out.count("\ufeff") == text.count("\ufeff")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_keeps_the_line_ending_style(path: Path) -> None:
    text = path.read_bytes().decode()
    out = enable_hwrng_config(text, TPM)
    if "\r\n" in text:
        assert "\n" not in out.replace("\r\n", "")
    else:
        assert "\r" not in out
    assert out.endswith("\n")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_commented_settings_stay_comments(path: Path) -> None:
    text = path.read_bytes().decode()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    out_comments = [line for line in enable_hwrng_config(text, TPM).splitlines() if line.lstrip().startswith("#")]
    assert out_comments == comments


# -- config.txt: exact results ----------------------------------------------------------


def test_config_bookworm_default_gets_the_line_appended_to_its_final_all() -> None:
    text = _read("raspios-bookworm.txt")
    assert text.endswith("[cm5]\ndtoverlay=dwc2,dr_mode=host\n\n[all]\n")
    assert enable_hwrng_config(text) == text + "dtparam=random=on\n"


def test_config_2015_raspbian_without_sections_appends_at_the_end() -> None:
    text = _read("raspbian-2015.txt")
    assert enable_hwrng_config(text) == text + "dtparam=random=on\n"
    assert "#dtparam=i2c_arm=on\n" in enable_hwrng_config(text)


def test_config_last_conditional_section_gets_a_new_all_section() -> None:
    out = enable_hwrng_config(_read("pi4-last.txt"))
    assert out == ("[pi4]\narm_boost=1\n[all]\ndtparam=audio=on\n[pi4]\ndtoverlay=vc4-kms-v3d-pi4\n"
                   "[all]\ndtparam=random=on\n")


def test_config_debian_generated_file_moves_spi_from_pi4_to_all() -> None:
    text = _read("debian-raspi-firmware.txt")
    out = enable_hwrng_config(text, TPM)
    assert out == (text.replace("dtparam=i2c_arm=on\ndtparam=spi=on\n", "dtparam=i2c_arm=on\n")
                   + "dtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n")


def test_config_combined_random_off_loses_only_that_item() -> None:
    out = enable_hwrng_config(_read("combined-no-newline.txt"))
    assert out == "dtparam=audio=on\n#dtparam=random=on\nenable_uart=1\ndtparam=random=on\n"


def test_config_combined_random_first_keeps_the_other_items() -> None:
    out = enable_hwrng_config(_read("random-first-combined.txt"))
    assert out == ("dtparam=audio=on\n# keep me\n[pi3]\ndtparam=i2c_arm=on,spi=on\n[all]\ngpu_mem=16\n"
                   "dtparam=random=on\n")


def test_config_combined_items_of_extra_params_are_removed_too() -> None:
    out = enable_hwrng_config(_read("random-first-combined.txt"), TPM)
    assert "[pi3]\ndtparam=i2c_arm=on\n[all]" in out
    assert out.endswith("gpu_mem=16\ndtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n")


def test_config_crlf_file_stays_crlf() -> None:
    out = enable_hwrng_config(_read("crlf.txt"))
    assert out == "# windows editor\r\ndtparam=audio=on\r\n[pi3]\r\nenable_uart=1\r\n[all]\r\ndtparam=random=on\r\n"


def test_config_bom_is_kept_and_duplicates_collapse() -> None:
    out = enable_hwrng_config(_read("bom-duplicate.txt"))
    assert out == "\ufeff[all]\ngpu_mem=16\ndtparam=random=on\n"


def test_config_empty_file_gets_just_the_line() -> None:
    assert enable_hwrng_config("") == "dtparam=random=on\n"
    assert enable_hwrng_config("", TPM) == "dtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n"


def test_config_no_trailing_newline_gets_one_before_the_appended_line() -> None:
    assert enable_hwrng_config("gpu_mem=16") == "gpu_mem=16\ndtparam=random=on\n"
    assert enable_hwrng_config("a=1\r\nb=2") == "a=1\r\nb=2\r\ndtparam=random=on\r\n"


def test_config_already_right_is_returned_unchanged() -> None:
    text = _read("already-enabled.txt")
    assert enable_hwrng_config(text) == text
    assert enable_hwrng_config("dtparam=random=on") == "dtparam=random=on"  # nothing to do: no eol added


def test_config_line_in_a_conditional_or_none_section_is_moved_to_all() -> None:
    out = enable_hwrng_config(_read("conditional-gpio.txt"))
    assert out == "[gpio4=1]\n[none]\n[0x2a01041]\nhdmi_safe=1\n[all]\ndtparam=random=on\n"


def test_config_random_on_before_the_last_section_is_moved_after_it() -> None:
    text = "dtparam=random=on\n[pi4]\narm_boost=1\n[all]\ngpu_mem=16\n"
    assert enable_hwrng_config(text) == "[pi4]\narm_boost=1\n[all]\ngpu_mem=16\ndtparam=random=on\n"


def test_config_bare_random_and_spaced_forms_count_as_the_setting() -> None:
    assert enable_hwrng_config("dtparam=random\n  dtparam=random=off\n") == "dtparam=random=on\n"


def test_config_tpm_overlay_with_parameters_and_spi_off_are_replaced() -> None:
    out = enable_hwrng_config(_read("tpm-hat.txt"), TPM)
    assert out == ("# TPM HAT, set up by hand\n[all]\n[pi4]\n"
                   "[all]\ndtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n")


def test_config_extra_dtparams_come_before_extra_overlays() -> None:
    out = enable_hwrng_config("", ["dtoverlay=tpm-slb9670", "dtparam=spi=on"])
    assert out == "dtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n"


def test_config_extra_combined_dtparam_is_split_and_repeats_are_ignored() -> None:
    out = enable_hwrng_config("dtparam=i2c_arm=off\n", ["dtparam=spi=on,i2c_arm=on", "dtparam=random=on"])
    assert out == "dtparam=random=on\ndtparam=spi=on\ndtparam=i2c_arm=on\n"


def test_config_extra_plain_setting_is_unique_too() -> None:
    out = enable_hwrng_config("gpu_mem=64\n[pi4]\ngpu_mem=128\n", ["gpu_mem=16"])
    assert out == "[pi4]\n[all]\ndtparam=random=on\ngpu_mem=16\n"


@pytest.mark.parametrize("extra", [["dtparam=spi=on", "dtparam=spi=off"], ["# comment"], ["dtoverlay="]])
def test_config_contradictory_or_meaningless_extra_is_refused(extra: list[str]) -> None:
    with pytest.raises(ValueError):
        enable_hwrng_config("", extra)


def test_config_other_overlays_and_unrelated_params_are_untouched() -> None:
    text = "dtoverlay=vc4-kms-v3d\ndtparam=audio=on\ndtoverlay=tpm-slb9670x\ndtparam=spidev=on\n"
    assert enable_hwrng_config(text, TPM) == text + "dtparam=random=on\ndtparam=spi=on\ndtoverlay=tpm-slb9670\n"


# -- kernel modules ---------------------------------------------------------------------

HWR = "kernel/drivers/char/hw_random"


@pytest.mark.parametrize(("paths", "builtin", "expected"), [
    ([f"{HWR}/bcm2708-rng.ko"], "", "bcm2708_rng"),
    ([f"{HWR}/bcm2708_rng.ko"], "", "bcm2708_rng"),
    ([f"{HWR}/bcm2708-rng.ko", f"{HWR}/bcm2835-rng.ko"], "", "bcm2708_rng"),
    ([f"{HWR}/bcm2835-rng.ko.xz", f"{HWR}/rng-core.ko.xz"], "", "bcm2835_rng"),
    ([f"{HWR}/bcm2835-rng.ko.zst"], "", "bcm2835_rng"),
    ([f"{HWR}/bcm2835-rng.ko.gz"], "", "bcm2835_rng"),
    ([f"{HWR}/iproc-rng200.ko.xz"], f"kernel/fs/ext4/ext4.ko\n{HWR}/bcm2835-rng.ko\n", None),
    ([f"{HWR}/bcm2835-rng.ko"], f"{HWR}/bcm2835-rng.ko\n", None),  # built in wins over a stray file
    ([], "", None),
    ([f"{HWR}/bcm2835-rng.ko.xz.bak", "modules.dep", f"{HWR}/not-bcm2835-rng.ko"], "", None),
], ids=["old-dash", "old-underscore", "old-wins", "xz", "zst", "gz", "builtin", "builtin-wins", "absent", "lookalikes"])
def test_rng_module_follows_the_kernel(paths: list[str], builtin: str, expected: str | None) -> None:
    assert pick_rng_module(paths, builtin) == expected


def test_tpm_rng_module_only_when_the_kernel_has_it_as_a_module() -> None:
    assert pick_tpm_rng_module([f"{HWR}/tpm-rng.ko"], "") == "tpm_rng"
    assert pick_tpm_rng_module([f"{HWR}/tpm_rng.ko.xz"], "") == "tpm_rng"
    assert pick_tpm_rng_module(["kernel/drivers/char/tpm/tpm.ko.xz", f"{HWR}/bcm2835-rng.ko"], "") is None
    assert pick_tpm_rng_module([f"{HWR}/tpm-rng.ko"], f"{HWR}/tpm-rng.ko\n") is None


def test_modules_load_conf_is_a_header_then_one_name_a_line() -> None:
    out = modules_load_conf(["bcm2835-rng", "tpm_rng", "bcm2835_rng"])
    lines = out.splitlines()
    assert all(line.startswith("#") for line in lines[:2]) and lines[2:] == ["bcm2835_rng", "tpm_rng"]
    assert out.endswith("tpm_rng\n")
    assert [x for x in modules_load_conf([]).splitlines() if not x.startswith("#")] == []


@pytest.mark.parametrize("bad", ["", "two words", "x\ny", "../evil"])
def test_modules_load_conf_refuses_what_is_not_a_module_name(bad: str) -> None:
    with pytest.raises(UserError, match="hwrng.module"):
        modules_load_conf([bad])


# -- accounts ---------------------------------------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n"
SHADOW = "root:*:19000:0:99999:7:::\npi:$6$old:19000:0:99999:7:::\n"
GROUP = "root:x:0:\nsudo:x:27:pi\npi:x:1000:\n"
GSHADOW = "root:*::\nsudo:*::pi\npi:!::\n"


def test_password_hash_and_root_lock_touch_only_their_fields() -> None:
    out = lock_root(set_password_hash(SHADOW, "pi", "$6$new$abc"))
    assert out == "root:!:19000:0:99999:7:::\npi:$6$new$abc:19000:0:99999:7:::\n"


def test_rename_user_moves_home_group_and_memberships() -> None:
    p, s, g, gs = rename_user(PASSWD, SHADOW, GROUP, GSHADOW, "pi", "ada")
    assert user_entry(p, "ada") == (1000, 1000, "/home/ada") and user_entry(p, "pi") is None
    assert "sudo:x:27:ada" in g and "ada:x:1000:" in g and s.startswith("root:*") and "ada:$6$old" in s
    assert "sudo:*::ada" in gs


def test_add_user_takes_next_free_id_and_joins_existing_groups() -> None:
    p, s, g, _ = add_user(PASSWD, SHADOW, GROUP, GSHADOW, "ops", "$6$h", ["sudo", "nonexistent"])
    assert user_entry(p, "ops") == (1001, 1001, "/home/ops")
    assert "sudo:x:27:pi,ops" in g and "ops:$6$h:" in s
    with pytest.raises(UserError, match="exists already"):
        add_user(p, s, g, GSHADOW, "ops", "$6$h", [])


def test_sshd_and_rngd_files() -> None:
    assert re.search(r"^PasswordAuthentication no$", sshd_dropin(False), re.M)
    assert re.search(r"^PermitRootLogin no$", sshd_dropin(True), re.M)
    assert 'HRNGDEVICE=/dev/hwrng\nRNGDOPTIONS="--fill-watermark=128"' in rngd_defaults("rng-tools-debian",
                                                                                      "/dev/hwrng", 128)
    assert "--rng-device=/dev/hwrng" in rngd_defaults("rng-tools5", "/dev/hwrng", 2048)


def test_cmdline_loses_only_the_raspios_firstboot_init() -> None:
    line = "console=serial0,115200 root=PARTUUID=1234-02 rootwait init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
    assert cmdline_without_init(line) == "console=serial0,115200 root=PARTUUID=1234-02 rootwait\n"
    assert cmdline_without_init("root=/dev/mmcblk0p2 init=/bin/sh\n") == "root=/dev/mmcblk0p2 init=/bin/sh\n"
