"""`boot-test --tpm`: under -M virt with swtpm and virtio-rng, both RNGs feed the kernel only
with hwrng.tpm; an image built without it fails exactly that check (T3)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stages.boottest.run import read_manifest
from stages.boottest.tpm import tpm_boot_test
from tests.conftest import ROOT, need_tools, timed

pytestmark = pytest.mark.boot


def _need() -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "swtpm")


def test_with_hwrng_tpm_bits_from_the_tpm_and_the_board_rng_reach_the_kernel(base_arm64: Path,
                                                                               tmp_path: Path) -> None:
    _need()
    from stages.build.pipeline import build
    from stages.core.recipe import load_recipe

    config = load_recipe(ROOT / "recipes" / "debian-arm64-tpm.toml")
    with timed("build", "debian-arm64-tpm"):
        build(config, tmp_path / "out")
    image = tmp_path / "out" / "debian-arm64-tpm.img"
    with timed("boot", "tpm (debian-arm64-tpm)"):
        report = tpm_boot_test(image, read_manifest(image))
    print(json.dumps(report["checks"], indent=1)[:4000])
    assert report["passed"], [c["detail"] for c in report["checks"] if not c["passed"]]
    three = next(c for c in report["checks"] if c["id"] == "T3")
    assert three["evidence"]["host_counts"]["tpm"]["random_bytes"] >= three["evidence"]["feeder"]["bytes"] > 0
    assert three["evidence"]["host_counts"]["virtio-rng"]["delivered_bytes"] > 0


def test_without_hwrng_tpm_the_tpm_check_fails_and_only_it(built_arm64: Path, tmp_path: Path) -> None:
    _need()
    # a copy: the report and console log go beside the image, and the session's out/ is checked whole
    image = tmp_path / built_arm64.name
    subprocess.run(["cp", "--sparse=always", str(built_arm64), str(image)], check=True)
    manifest = built_arm64.with_name(built_arm64.name.removesuffix(".img") + ".manifest.json")
    shutil.copy(manifest, tmp_path / manifest.name)
    with timed("boot", "tpm (ci-arm64, no hwrng.tpm)"):
        report = tpm_boot_test(image, read_manifest(image))
    verdicts = {c["id"]: c["passed"] for c in report["checks"]}
    assert verdicts == {"T1": True, "T2": True, "T3": False, "T4": True}, report["checks"]
    three = next(c for c in report["checks"] if c["id"] == "T3")
    # the hw_random core reads 32 bytes from a device as it registers it (add_early_randomness,
    # uncredited); nothing reads the TPM after that
    assert re.search(r"the TPM delivered (0|32) random bytes, taken by nobody", three["detail"]), three["detail"]
