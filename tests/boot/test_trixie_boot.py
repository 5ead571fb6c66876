"""Today's Raspberry Pi OS shape (trixie: cloud-init, the initramfs resize) under the boot test.

- `invoke boot-test --recipe recipes/debian-trixie-arm64.toml --cards B`, the command users run,
  with the examined first boot: every check of that boot passes, 11 (the image's initramfs resize
  ran) and 12 (cloud-init finished without errors) included. The suite boots card B only: each
  trixie boot takes two minutes under TCG here, and cards A and C (six boots) exercise the same
  first-boot guard as on bookworm (tests/boot/test_boot_test.py); the whole seven-boot run is
  measured in the README.
- A card flashed with an Imager-style user-data (`invoke flash --user-data`: host name, a second
  user with an authorized key, ssh_pwauth false, runcmd) boots: cloud-init applied it, and that
  user logs in with StrictHostKeyChecking=yes against the known_hosts the card published, under
  the user-data's host name; sshd serves exactly the published keys. Powered on again (cmdline.txt
  as the resize rewrote it), it serves the same keys to the same login.
- Negative control: a copy without ``resize`` on its cmdline.txt and with a user-data whose
  runcmd fails fails exactly checks 9, 11 and 12. The same user-data turns cloud-init's ssh module
  hostile (ssh_deletekeys, ssh_genkeytypes): checks 3 and 4 still pass, so sshd serves exactly the
  published keys although cloud-init deleted the keys and made its own in that boot.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from stages.boottest.bootfiles import BootFiles, card_cmdline, extract_boot_files
from stages.boottest.cards import PROBE_ARGS
from stages.boottest.evidence import keyscan, known_hosts_keys, known_hosts_names
from stages.boottest.login import password_attempt
from stages.boottest.machine import Machine, make_overlay
from stages.boottest.prepare import Facts, prepare
from stages.boottest.run import boot_test_for, read_manifest
from stages.flash.write import flash
from tests.conftest import need_root, need_tools, timed
from tests.support import sabotage as s
from tests.support.boot_command import boot_test_command

pytestmark = pytest.mark.boot

TOOLS = ("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen")


def test_invoke_boot_test_on_the_trixie_recipe_passes_every_check(base_trixie_arm64: Path, tmp_path: Path) -> None:
    need_tools(*TOOLS)
    run = boot_test_command("debian-trixie-arm64", tmp_path, "--cards", "B")
    out, report, checks = run.out, run.report, run.checks
    assert list(checks) == ["1a", "1b", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "0"]
    assert report["passed"] and [n for n, c in checks.items() if not c["ok"]] == ["6", "7", "8", "10"], run.stdout
    assert all(checks[n]["ok"] is None and "card" in checks[n]["detail"] for n in ("6", "7", "8", "10"))
    eleven, twelve = checks["11"]["evidence"], checks["12"]["evidence"]
    assert eleven["disk_id_before"] != eleven["disk_id_after"]
    assert "resize" not in eleven["cmdline_txt_after"].split()
    assert twelve["status"] == "done" and twelve["errors"] == [] and twelve["datasource"]
    nine = checks["9"]["evidence"]
    assert nine["end_after"] > nine["end_before"] and nine["fs_after"] > nine["fs_before"]
    manifest = json.loads((out / "debian-trixie-arm64.manifest.json").read_text())
    assert manifest["image"]["first_boot_expansion"] != "entropi-growroot.service"
    text = (out / "debian-trixie-arm64.boot-report.md").read_text()
    for check in report["checks"]:
        assert f"| {check['number']} | {check['name']} | " in text, check


IMAGER_USER_DATA = """\
#cloud-config
hostname: garden-07
manage_etc_hosts: true
users:
- name: ada
  groups: users,adm,sudo
  shell: /bin/bash
  lock_passwd: true
  ssh_authorized_keys:
  - {pub}
  sudo: ALL=(ALL) NOPASSWD:ALL
ssh_pwauth: false
runcmd:
- [systemctl, enable, --now, ssh]
- [sh, -c, 'echo from-user-data > /var/tmp/runcmd-ran']
"""


LOOK = "; ".join([  # run as the user-data's user on the card
    'echo "hostname=$(hostname)"', 'echo "groups=$(id -nG)"', 'echo "runcmd=$(cat /var/tmp/runcmd-ran)"',
    'echo "instance=$(cloud-init query instance_id)"',
    'echo "cloud_init_sshd=$(sudo -n cat /etc/ssh/sshd_config.d/50-cloud-init.conf | tr "\\n" " ")"',
    'echo "sshd=$(sudo -n sshd -T | grep -i ^passwordauthentication)"'])


@dataclass
class Seen:
    """One boot of the Imager card: the probe's report, what sshd served, what ada saw, the password try."""

    probe: dict[str, Any]
    served: list[str]
    login: subprocess.CompletedProcess[str]
    password: str

    @property
    def on_card(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.login.stdout.splitlines() if "=" in line)


def boot_imager_card(files: BootFiles, disk: Path, log: Path, trust: Path, key: Path, facts: Facts) -> Seen:
    """Boot the card; once the probe has reported (after cloud-init is done), log in as ada trusting
    only ``trust`` (written from the probe's report on the first boot, kept for the next)."""
    with Machine(files, disk, "arm64", log) as vm:
        m = vm.wait_for(r"ENTROPI-PROBE (\{.*\})\r?\n", 900, poll=2)
        assert m, "no probe report:\n" + vm.text()[-3000:]
        probe = json.loads(m.group(1))
        if not trust.exists():
            trust.write_text(probe["known_hosts"])  # as the card published it
        served = keyscan(vm.port, timeout=30)
        login = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={trust}",
             "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=garden-07", "-o", "IdentitiesOnly=yes",
             "-o", "ConnectTimeout=30", "-p", str(vm.port), "-i", str(key), "ada@127.0.0.1", LOOK],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        # pi with the password the boot test set: sshd must refuse passwords (ssh_pwauth: false)
        password = password_attempt(vm.port, trust, replace(facts, hostname="garden-07"))
    return Seen(probe, served, login, password)


def test_an_imager_style_user_data_is_applied_and_its_user_logs_in_through_the_published_keys(
        built_trixie_arm64: Path, user_key: Path, tmp_path: Path) -> None:
    """The card as a user has it: flashed with Imager's kind of user-data, booted, then powered on again."""
    need_root()
    need_tools(*TOOLS)
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(IMAGER_USER_DATA.format(pub=user_key.with_suffix(".pub").read_text().strip()))
    card = tmp_path / "card.img"
    flash(built_trixie_arm64, card, yes=True, to_file=True, force_non_removable=False, hostname=None,
          user_data=user_data)
    disk = make_overlay(card, tmp_path / "card.qcow2")  # a card larger than the image: the resize has room
    facts = prepare(card, disk, read_manifest(built_trixie_arm64))  # the boot test's probe on the card
    files = extract_boot_files(card, "arm64", tmp_path / "boot")
    files = replace(files, cmdline=f"{files.cmdline} {PROBE_ARGS}")
    assert "ds=nocloud;i=entropi-" in files.cmdline
    trust = tmp_path / "published_known_hosts"
    with timed("boot", "a card flashed with an Imager-style user-data"):
        first = boot_imager_card(files, disk, tmp_path / "card.boot.log", trust, user_key, facts)
    assert first.login.returncode == 0, first.login.stderr
    seen = first.on_card
    assert seen["hostname"] == "garden-07" and "sudo" in seen["groups"].split(), seen
    assert seen["runcmd"] == "from-user-data" and seen["instance"].startswith("entropi-"), seen
    # ssh_pwauth: false, as cloud-init writes it, and what sshd makes of its configuration
    assert "PasswordAuthentication no" in seen["cloud_init_sshd"] and seen["sshd"] == "passwordauthentication no"
    assert first.password == "refused", first.password
    # published under the user-data's host name; sshd serves exactly those keys
    published = trust.read_text()
    assert known_hosts_names(published) == ["garden-07"]
    assert first.served == known_hosts_keys(published) and len(first.served) == 3, (first.served, published)
    status = first.probe["cloud_init"]["status"]
    assert first.probe["cloud_init"]["exit"] == 0 and status["status"] == "done" and not status["errors"], status
    assert first.probe["hostname"] == "garden-07"

    # Powered on again, as the firmware does it: with cmdline.txt as the first boot's resize left it
    again = replace(files, cmdline=f"{card_cmdline(disk, files.boot_part, 'arm64')} {PROBE_ARGS}")
    new_root = first.probe["mounts"]["/"]["partuuid"]
    assert f"root=PARTUUID={new_root}" in again.cmdline.split() and "resize" not in again.cmdline.split()
    with timed("boot", "the Imager card's second boot"):
        second = boot_imager_card(again, disk, tmp_path / "card.boot-2.log", trust, user_key, facts)
    assert second.login.returncode == 0, second.login.stderr  # the same published keys still trusted
    assert second.served == first.served and second.on_card["instance"] == seen["instance"]
    assert second.on_card["hostname"] == "garden-07" and second.probe["mounts"]["/"]["partuuid"] == new_root
    assert second.probe["cloud_init"]["exit"] == 0 and second.probe["cloud_init"]["status"]["status"] == "done"


def test_a_copy_without_resize_and_a_failing_hostile_user_data_fails_exactly_9_11_12(
        built_trixie_arm64: Path, user_key: Path, tmp_path: Path) -> None:
    need_tools(*TOOLS)
    image = s.sabotaged_copy(built_trixie_arm64, tmp_path / "out", "trixie-controls",
                             [s.resize_dropped, s.hostile_failing_user_data])
    with timed("boot", "negative control trixie resize-cloud-init"):
        report = boot_test_for(image, str(user_key), read_manifest(image), cards=("B",), tamper=False).run()
    checks = {c["number"]: c for c in report["checks"]}
    failed = sorted(n for n, c in checks.items() if c["ok"] is False)
    assert failed == ["11", "12", "9"], {n: checks[n]["detail"] for n in failed}
    assert re.search(r"partition end (\d+) -> \1 MiB", checks["9"]["detail"])
    assert "disk identifier is still" in checks["11"]["detail"]
    assert re.search(r"status '(error|done)'.*(errors \[.+\]|recoverable)", checks["12"]["detail"]), checks["12"]
    # the hostile ssh settings acted (cloud-init deleted the keys and made its own in this boot) and the
    # card still serves exactly the keys it published, made after crng init (checks 2, 3, 4)
    log = (tmp_path / "out" / "trixie-controls.boot.log").read_text(errors="replace")
    assert re.search(r"Generating public/private \w+ key pair", log), log[-3000:]
    for number in ("1b", "2", "3", "4", "5"):
        assert checks[number]["ok"], (number, checks[number]["detail"])
    assert checks["0"]["ok"] and not report["passed"]
