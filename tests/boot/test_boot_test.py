"""`boot-test` on the image built from the Debian arm64 base: every check passes (TCG)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.boottest import BootTest, base_keys_for, summary
from tests.conftest import need_tools

pytestmark = pytest.mark.boot


def test_built_image_passes_every_boot_check(built_arm64: Path, user_key: Path) -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan")
    base_keys = base_keys_for(built_arm64)
    assert base_keys, "the base image's pre-baked host keys must be known to compare against"
    run = BootTest(built_arm64, "arm64", key=user_key, user="pi", out_dir=built_arm64.parent,
                   base_keys=base_keys)
    report = run.run(password_expected=False)
    text = summary(report)
    print(text)
    assert [c["number"] for c in report["checks"]] == [1, 2, 3, 4, 5, 6, 7, 8, 0]
    assert report["passed"], text
    saved = json.loads((built_arm64.parent / "ci-arm64.boot-report.json").read_text())
    assert saved["passed"] is True
    assert (built_arm64.parent / "ci-arm64.boot.log").read_text().count("hwrng registered") >= 1
