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


def _effective(text: str) -> list[tuple[str, str]]:
    """(section, line) for every active line."""
    section, out = "[all]", []
    for line in text.splitlines():
        s = line.strip().lstrip("\ufeff")
        if s.startswith("[") and s.endswith("]"):
            section = s
        elif s and not s.startswith("#"):
            out.append((section, s))
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_random_on_exactly_once_in_all_and_idempotent(path: Path) -> None:
    text = path.read_bytes().decode()
    once = enable_hwrng_config(text)
    assert enable_hwrng_config(once) == once
    active = _effective(once)
    assert [x for x in active if "random" in x[1]] == [("[all]", "dtparam=random=on")]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_unrelated_line_is_kept_byte_for_byte(path: Path) -> None:
    text = path.read_bytes().decode()
    out = enable_hwrng_config(text)
    kept = [line for line in text.lstrip("\ufeff").splitlines(keepends=True) if "random" not in line]
    rest = out.lstrip("\ufeff").splitlines(keepends=True)
    for line in kept[:-1]:  # the last line may gain a newline
        assert line in rest, line
    assert out.startswith("\ufeff") == text.startswith("\ufeff")


def test_crlf_file_stays_crlf() -> None:
    out = enable_hwrng_config((FIXTURES / "config_txt" / "crlf.txt").read_bytes().decode())
    assert "\n" not in out.replace("\r\n", "")
    assert out.endswith("[all]\r\ndtparam=random=on\r\n")


def test_existing_random_off_is_replaced_and_combined_params_keep_the_rest() -> None:
    out = enable_hwrng_config((FIXTURES / "config_txt" / "combined-no-newline.txt").read_text())
    assert "random=off" not in out
    assert out.splitlines()[0] == "dtparam=audio=on"
    assert "#dtparam=random=on" in out  # comments stay comments
    assert out.endswith("enable_uart=1\ndtparam=random=on\n")


def test_last_conditional_section_gets_a_new_all_section() -> None:
    out = enable_hwrng_config((FIXTURES / "config_txt" / "pi4-last.txt").read_text())
    assert out.endswith("[pi4]\ndtoverlay=vc4-kms-v3d-pi4\n[all]\ndtparam=random=on\n")


def test_tpm_lines_added_once_and_spi_off_replaced() -> None:
    extra = ["dtparam=spi=on", "dtoverlay=tpm-slb9670"]
    out = enable_hwrng_config("dtparam=spi=off\n[pi4]\narm_boost=1\n", extra)
    assert enable_hwrng_config(out, extra) == out
    active = _effective(out)
    assert ("[all]", "dtparam=spi=on") in active and ("[all]", "dtoverlay=tpm-slb9670") in active
    assert not [x for x in active if x[1] == "dtparam=spi=off"]


def test_rng_module_choice_follows_the_kernel() -> None:
    old = ["kernel/drivers/char/hw_random/bcm2708-rng.ko"]
    new = ["kernel/drivers/char/hw_random/bcm2835-rng.ko.xz", "kernel/drivers/char/hw_random/rng-core.ko.xz"]
    assert pick_rng_module(old, "") == "bcm2708_rng"
    assert pick_rng_module(new, "") == "bcm2835_rng"
    assert pick_rng_module([], "kernel/drivers/char/hw_random/bcm2835-rng.ko\n") is None
    assert pick_tpm_rng_module(["kernel/drivers/char/hw_random/tpm-rng.ko"], "") == "tpm_rng"
    assert pick_tpm_rng_module(new, "") is None


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
