"""The armhf base boots under -M raspi2b, registers the hwrng and serves fresh host keys of every
type over SSH. One retry, on record, only for a named emulator fault. (The arm64 base boots under
-M raspi3b in tests/boot/test_negative_controls.py, judged as an image entropi did not build: the
hwrng serves /dev/hwrng, and its regenerator's fresh keys, none pre-baked, are served.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.boottest.base_boot import baked_keys, boot_base, key_types
from stages.boottest.machine import QEMU
from stages.core.files import sha256_file
from tests.conftest import need_tools

pytestmark = pytest.mark.boot


@pytest.fixture
def base(request: pytest.FixtureRequest) -> Path:
    """The cached base of the parametrised arch, made in the setup phase (its own timing row)."""
    path: Path = request.getfixturevalue(f"base_{request.param}")
    return path


@pytest.mark.parametrize("base, arch, machine", [("armhf", "armhf", "raspi2b")], indirect=["base"],
                         ids=["armhf-raspi2b"])
def test_base_boots_with_hwrng_and_answers_ssh(base: Path, arch: str, machine: str, tmp_path: Path) -> None:
    need_tools("qemu-system-aarch64" if arch == "arm64" else "qemu-system-arm", "qemu-img", "ssh-keyscan")
    assert QEMU[arch][1] == machine
    before = sha256_file(base)
    baked = baked_keys(base)
    expected = key_types(baked)
    boot = boot_base(base, arch, tmp_path, expected_types=expected)
    last = boot.last
    console = last.console.read_text(errors="replace")
    for fault in boot.emulator_faults:
        print(f"emulator fault (retried once): {fault}")
    assert last.failure is None, f"{last.failure}\n{console[-3000:]}"
    assert last.hwrng_seconds is not None, console[-3000:]
    # the base's regenerator replaced its pre-baked keys at first boot: fresh keys of every type
    assert key_types(last.keys) == expected, console[-3000:]
    assert not set(last.keys) & set(baked), "pre-baked key served"
    assert sha256_file(base) == before
