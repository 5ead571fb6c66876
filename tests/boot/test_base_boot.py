"""The arm64 base image boots under -M raspi3b, registers the hwrng and serves SSH."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from stages.qemu import Machine, extract_boot_files, make_overlay
from stages.util import sha256_file
from tests.conftest import need_tools

pytestmark = pytest.mark.boot


def keyscan(port: int) -> str:
    res = subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True)
    return res.stdout


def test_arm64_base_boots_with_hwrng_and_answers_ssh(base_arm64: Path, tmp_path: Path) -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "ssh-keyscan")
    before = sha256_file(base_arm64)
    files = extract_boot_files(base_arm64, "arm64", tmp_path / "boot")
    disk = make_overlay(base_arm64, tmp_path / "sd.qcow2")
    with Machine(files, disk, "arm64", tmp_path / "serial.log") as vm:
        assert vm.wait_for(r"hwrng registered", 240), vm.text()[-3000:] + vm.qemu_stderr()
        deadline = time.monotonic() + 300
        keys = ""
        while time.monotonic() < deadline and not keys:
            keys = keyscan(vm.port)
            if not keys:
                time.sleep(3)
        assert "ssh-ed25519" in keys, vm.text()[-3000:]
    assert sha256_file(base_arm64) == before
