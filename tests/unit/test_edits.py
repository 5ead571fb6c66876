"""Pure edits: config.txt (hold-out shapes), RNG module choice, accounts, sshd, rngd, cmdline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stages.core.errors import UserError
from stages.textedit.accounts import add_user, lock_root, rename_user, set_password_hash, user_entry
from stages.textedit.config_txt import enable_hwrng_config
from stages.textedit.modules import modules_load_conf, pick_rng_module, pick_tpm_rng_module
from stages.textedit.services import deferring_regenerator, rngd_defaults, sshd_dropin, with_diversion
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


def test_modules_load_conf_treats_an_unvalidated_name_as_a_programmer_error() -> None:
    # hwrng.module is validated in config.py (tests/fixtures/bad/bad-module.toml)
    with pytest.raises(ValueError):
        modules_load_conf(["../evil"])


# -- accounts ---------------------------------------------------------------------------

PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
          "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
SHADOW = ("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
          "pi:$6$old:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
GROUP = "root:x:0:\nadm:x:4:pi\nsudo:x:27:pi\nvideo:x:44:pi,kiosk\npi:x:1000:\nkiosk:x:1001:\n"
GSHADOW = "root:*::\nadm:*::pi\nsudo:*:pi:pi\nvideo:*::pi,kiosk\npi:!::\nkiosk:!::\n"


def _changed(before: str, after: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(before.split("\n"), after.split("\n"), strict=True) if a != b]


def test_user_entry_reads_uid_gid_home() -> None:
    assert user_entry(PASSWD, "pi") == (1000, 1000, "/home/pi")
    assert user_entry(PASSWD, "root") == (0, 0, "/root")
    assert user_entry(PASSWD, "p") is None
    assert user_entry("broken:x:abc:1:::/bin/sh\n", "broken") is None
    assert user_entry("", "pi") is None


def test_set_password_hash_changes_only_that_field() -> None:
    out = set_password_hash(SHADOW, "pi", "$y$j9T$salt$hash")
    assert _changed(SHADOW, out) == [("pi:$6$old:19000:0:99999:7:::", "pi:$y$j9T$salt$hash:19000:0:99999:7:::")]


def test_set_password_hash_can_set_the_last_change_day() -> None:
    out = set_password_hash("pi:!:0:0:99999:7:::\n", "pi", "$6$x", last_change=19800)
    assert out == "pi:$6$x:19800:0:99999:7:::\n"


def test_set_password_hash_keeps_a_missing_final_newline() -> None:
    assert set_password_hash("pi:!:1::::::", "pi", "$6$x") == "pi:$6$x:1::::::"


@pytest.mark.parametrize("bad", ["", "a:b", "x\ny"])
def test_set_password_hash_treats_a_hash_that_would_break_the_file_as_a_programmer_error(bad: str) -> None:
    with pytest.raises(ValueError):
        set_password_hash(SHADOW, "pi", bad)


def test_set_password_hash_for_an_unknown_user_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no shadow entry for ada"):
        set_password_hash(SHADOW, "ada", "$6$x")


def test_lock_root_leaves_a_bang_like_passwd_dl() -> None:
    out = lock_root(set_password_hash(SHADOW, "root", "$6$rootpw"))
    assert _changed(SHADOW, out) == [("root:*:19000:0:99999:7:::", "root:!:19000:0:99999:7:::")]
    assert lock_root(out) == out


def test_lock_root_without_root_is_a_user_error() -> None:
    with pytest.raises(UserError, match="root"):
        lock_root("pi:!:1::::::\n")


def test_rename_user_moves_name_home_own_group_and_memberships() -> None:
    p, s, g, gs = rename_user(PASSWD, SHADOW, GROUP, GSHADOW, "pi", "ada")
    assert _changed(PASSWD, p) == [("pi:x:1000:1000:,,,:/home/pi:/bin/bash", "ada:x:1000:1000:,,,:/home/ada:/bin/bash")]
    assert _changed(SHADOW, s) == [("pi:$6$old:19000:0:99999:7:::", "ada:$6$old:19000:0:99999:7:::")]
    assert _changed(GROUP, g) == [("adm:x:4:pi", "adm:x:4:ada"), ("sudo:x:27:pi", "sudo:x:27:ada"),
                                  ("video:x:44:pi,kiosk", "video:x:44:ada,kiosk"), ("pi:x:1000:", "ada:x:1000:")]
    assert _changed(GSHADOW, gs) == [("adm:*::pi", "adm:*::ada"), ("sudo:*:pi:pi", "sudo:*:ada:ada"),
                                     ("video:*::pi,kiosk", "video:*::ada,kiosk"), ("pi:!::", "ada:!::")]
    assert user_entry(p, "ada") == (1000, 1000, "/home/ada") and user_entry(p, "pi") is None


def test_rename_user_does_not_touch_names_that_merely_contain_the_old_one() -> None:
    group = "pix:x:5:pi2,pix\npi:x:1000:\n"
    _, _, g, _ = rename_user(PASSWD, SHADOW, group, "", "pi", "ada")
    assert g == "pix:x:5:pi2,pix\nada:x:1000:\n"


def test_rename_user_keeps_a_home_outside_home_and_a_shared_primary_group() -> None:
    passwd = "svc:x:1000:100::/srv/svc:/bin/sh\n"
    group = "users:x:100:\nsvc:x:2000:\n"
    p, _, g, _ = rename_user(passwd, "svc:!:1::::::\n", group, "", "svc", "ops")
    assert p == "ops:x:1000:100::/srv/svc:/bin/sh\n"
    assert g == group  # 'svc' has another gid: not the user's own group


def test_rename_user_to_itself_changes_nothing() -> None:
    assert rename_user(PASSWD, SHADOW, GROUP, GSHADOW, "pi", "pi") == (PASSWD, SHADOW, GROUP, GSHADOW)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("ghost", "ada", "no user ghost"),
    ("pi", "daemon", "user daemon exists already"),
    ("pi", "kiosk", "group kiosk exists already"),
])
def test_rename_user_impossible_requests_are_user_errors(old: str, new: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        rename_user(PASSWD, SHADOW, GROUP, GSHADOW, old, new)


def test_add_user_appends_entries_with_the_lowest_id_free_as_uid_and_gid() -> None:
    p, s, g, gs = add_user(PASSWD, SHADOW, GROUP, GSHADOW, "ops", "$6$h", ["sudo", "video", "nonexistent"])
    assert p == PASSWD + "ops:x:1002:1002::/home/ops:/bin/bash\n"  # 1000 pi, 1001 the kiosk group
    assert s == SHADOW + "ops:$6$h::0:99999:7:::\n"
    assert g == GROUP.replace("sudo:x:27:pi", "sudo:x:27:pi,ops").replace("video:x:44:pi,kiosk",
                                                                          "video:x:44:pi,kiosk,ops") + "ops:x:1002:\n"
    assert gs == GSHADOW.replace("sudo:*:pi:pi", "sudo:*:pi:pi,ops").replace(
        "video:*::pi,kiosk", "video:*::pi,kiosk,ops") + "ops:!::\n"
    assert user_entry(p, "ops") == (1002, 1002, "/home/ops")


def test_add_user_on_a_fresh_image_takes_1000_and_fills_empty_member_lists() -> None:
    passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin"
    p, s, g, gs = add_user(passwd, "root:*:1::::::", "root:x:0:\nsudo:x:27:", "", "ada", "!", ["sudo"],
                           last_change=19800)
    assert p == passwd + "\nada:x:1000:1000::/home/ada:/bin/bash\n"  # the missing final newline is supplied
    assert s == "root:*:1::::::\nada:!:19800:0:99999:7:::\n"
    assert g == "root:x:0:\nsudo:x:27:ada\nada:x:1000:\n"
    assert gs == ""  # no gshadow file: none made up


@pytest.mark.parametrize(("name", "message"), [
    ("pi", "user pi exists already"),
    ("kiosk", "group kiosk exists already"),
])
def test_add_user_impossible_requests_are_user_errors(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        add_user(PASSWD, SHADOW, GROUP, GSHADOW, name, "$6$h", [])


def test_account_edits_keep_every_other_line_byte_for_byte() -> None:
    odd = "# comment line\n\nweird:x:7:7:Ünïcödé\u2028name:/var/weird:/bin/sh\n"
    passwd = odd + "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n"
    p, _, _, _ = rename_user(passwd, "pi:!:1::::::\n", "pi:x:1000:\n", "", "pi", "ada")
    assert p.startswith(odd)
    p2, _, _, _ = add_user(p, "", "", "", "bob", "!", [])
    assert p2.startswith(p)


# -- sshd, rngd, cmdline ----------------------------------------------------------------


@pytest.mark.parametrize(("allow", "word"), [(True, "yes"), (False, "no")])
def test_sshd_dropin_exact_settings(allow: bool, word: str) -> None:
    out = sshd_dropin(allow)
    settings = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert settings == [f"PasswordAuthentication {word}", "KbdInteractiveAuthentication no", "PermitRootLogin no"]
    assert out.startswith("# ") and out.endswith("PermitRootLogin no\n")


def test_rngd_defaults_for_rng_tools_debian() -> None:
    out = rngd_defaults("rng-tools-debian", "/dev/hwrng", 128)
    assert [x for x in out.splitlines() if not x.startswith("#")] == [
        "HRNGDEVICE=/dev/hwrng", 'RNGDOPTIONS="--fill-watermark=128"']
    assert "fill at most half" in out and out.endswith("\n")


def test_rngd_defaults_for_rng_tools5_names_the_device_in_the_options() -> None:
    out = rngd_defaults("rng-tools5", "/dev/hwrng", 2048)
    assert [x for x in out.splitlines() if not x.startswith("#")] == [
        'RNGDOPTIONS="--rng-device=/dev/hwrng --fill-watermark=2048"']
    assert "fill at most half" in out


def test_rngd_defaults_treats_an_unvalidated_device_as_a_programmer_error() -> None:
    # rngd.device is validated in config.py (tests/fixtures/bad/rngd-device*.toml)
    with pytest.raises(ValueError):
        rngd_defaults("rng-tools5", '/dev/hwrng" --evil', 128)


@pytest.mark.parametrize(("package", "bits"), [("none", 128), ("rng-tools", 128), ("rng-tools-debian", 0)])
def test_rngd_defaults_refuses_unknown_packages_and_empty_watermarks(package: str, bits: int) -> None:
    with pytest.raises(ValueError):
        rngd_defaults(package, "/dev/hwrng", bits)


SCRIPT = "/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys"
OTHER = "/usr/bin/foo\n/usr/bin/foo.real\nfoo-pkg\n"


@pytest.mark.parametrize(("before", "after"), [
    ("", f"{SCRIPT}\n{SCRIPT}.distrib\n:\n"),
    (OTHER, f"{OTHER}{SCRIPT}\n{SCRIPT}.distrib\n:\n"),
    (OTHER.rstrip("\n"), f"{OTHER}{SCRIPT}\n{SCRIPT}.distrib\n:\n"),
], ids=["empty", "other-entry", "no-eol"])
def test_a_local_diversion_is_added_once_and_other_entries_stay(before: str, after: str) -> None:
    assert with_diversion(before, SCRIPT, SCRIPT + ".distrib") == after
    assert with_diversion(after, SCRIPT, SCRIPT + ".distrib") == after


def test_a_diversions_file_that_is_not_triples_is_refused() -> None:
    with pytest.raises(UserError, match=r"/var/lib/dpkg/diversions: 2 lines, not triples"):
        with_diversion("/a\n/b\n", SCRIPT, SCRIPT + ".distrib")


def test_the_deferring_regenerator_makes_no_keys_and_exits_0(tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "regenerate_ssh_host_keys"
    script.write_text(deferring_regenerator(SCRIPT))
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "entropi-firstboot" in done.stderr
    assert "ssh-keygen" not in script.read_text() and list(tmp_path.iterdir()) == [script]
