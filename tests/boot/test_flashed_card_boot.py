"""A card flashed with `invoke flash --host-keys`: its keys are known before it first boots.

Two loop-device cards are flashed from the built image with `--host-keys --hostname pi-{n:02}`;
card 1 boots under QEMU. The real OpenSSH client logs in with StrictHostKeyChecking=yes and
only the known_hosts file written at flash time; sshd serves exactly the keys made at flash
time (ssh-keyscan), and the guard says it kept them ("keys from flash") and published them.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from stages.boottest.bootfiles import extract_boot_files
from stages.boottest.evidence import keyscan, known_hosts_keys
from stages.boottest.machine import Machine, make_overlay
from tests.conftest import need_root, need_tools, timed
from tests.support.hostkey_cards import flash_loop_cards

pytestmark = pytest.mark.boot


def test_a_card_with_flash_time_keys_is_trusted_through_the_flash_known_hosts(built_arm64: Path, user_key: Path,
                                                                             tmp_path: Path) -> None:
    need_root()
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen", "losetup", "debugfs")
    flashed = flash_loop_cards(built_arm64, tmp_path, 2)
    assert flashed.hostnames == ["pi-01", "pi-02"]
    known = flashed.known_hosts.read_text()
    card1 = sorted(" ".join(line.split()[1:3]) for line in known.splitlines() if line.startswith("pi-01 "))
    card2 = sorted(" ".join(line.split()[1:3]) for line in known.splitlines() if line.startswith("pi-02 "))
    assert len(card1) == 3 and not set(card1) & set(card2)

    card = flashed.cards[0]
    files = extract_boot_files(card, "arm64", tmp_path / "boot")
    disk = make_overlay(card, tmp_path / "card-1.qcow2")
    log = tmp_path / "card-1.boot.log"
    with timed("boot", "a card flashed with --host-keys"), Machine(files, disk, "arm64", log) as vm:
        served: list[str] = []
        deadline = time.monotonic() + 600
        # until sshd has answered with every key made at flash time (an emulated sshd can answer the
        # first key type and time out on the next ones while the boot goes on)
        while time.monotonic() < deadline and vm.alive() and len(served) < len(card1):
            served = sorted(set(served) | set(keyscan(vm.port, timeout=30)))
            if len(served) < len(card1):
                time.sleep(3)
        assert served, "sshd never answered:\n" + vm.text()[-3000:]
        login = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={flashed.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
             "-o", "HostKeyAlias=pi-01", "-o", "IdentitiesOnly=yes",
             "-o", "ConnectTimeout=30", "-i", str(user_key), "-p", str(vm.port), "pi@127.0.0.1",
             "hostname; cat /boot/firmware/entropi/known_hosts"],
            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        console = vm.text()
    assert login.returncode == 0, login.stderr
    name, published = login.stdout.split("\n", 1)
    assert name.strip() == "pi-01"
    # sshd serves exactly the keys made at flash time, and the card publishes those, under its name
    assert served == card1, (served, card1)
    assert known_hosts_keys(published) == card1 and {line.split()[0] for line in published.splitlines()} == {"pi-01"}
    # the guard kept them: no key was made on the card, and it says where they came from
    assert "keys from flash" in console and "making the" not in console
    assert re.search(r'ENTROPI-FIRSTBOOT \{.*"keys_source": "flash"', console)
