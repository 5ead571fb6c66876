"""`boot-test --tpm`: under -M virt with swtpm and virtio-rng, both RNGs feed the kernel only
with hwrng.tpm. Negative controls, each on a copy of a built image that lacks one property:
built without hwrng.tpm fails exactly T3; a copy with no driver for the TPM and trousers' tcsd
enabled fails T1-T3 (the missing driver) and T4 (tcsd), each with its cause."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stages.boottest.run import read_manifest
from stages.boottest.tpm import tpm_boot_test
from tests.conftest import ROOT, need_tools, timed
from tests.support import sabotage as s
from tests.support.tpm12 import HOST_FROM_GUEST, tpm12_on_host

pytestmark = pytest.mark.boot


def _need() -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "swtpm")


@pytest.fixture(scope="module")
def tpm_image(base_arm64: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/debian-arm64-tpm.img, built once for this module (its boots use overlays or copies)."""
    _need()
    from stages.build.pipeline import build
    from stages.core.recipe import load_recipe

    out = tmp_path_factory.mktemp("tpm") / "out"
    with timed("build", "debian-arm64-tpm"):
        build(load_recipe(ROOT / "recipes" / "debian-arm64-tpm.toml"), out)
    return out / "debian-arm64-tpm.img"


def _verdicts(report: dict[str, Any]) -> tuple[dict[str, bool], dict[str, str]]:
    checks = report["checks"]
    return {c["id"]: c["passed"] for c in checks}, {c["id"]: c["detail"] for c in checks}


def test_with_hwrng_tpm_bits_from_the_tpm_and_the_board_rng_reach_the_kernel(tpm_image: Path) -> None:
    with timed("boot", "tpm (debian-arm64-tpm)"):
        report = tpm_boot_test(tpm_image, read_manifest(tpm_image))
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
    verdicts, details = _verdicts(report)
    assert verdicts == {"T1": True, "T2": True, "T3": False, "T4": True}, details
    # the hw_random core reads 32 bytes from a device as it registers it (add_early_randomness,
    # uncredited); nothing reads the TPM after that
    assert re.search(r"the TPM delivered (0|32) random bytes, taken by nobody", details["T3"]), details["T3"]


def test_without_a_tpm_driver_and_with_trousers_enabled_all_four_checks_fail_each_for_its_cause(
        tpm_image: Path, tmp_path: Path) -> None:
    """One copy, two properties broken (one boot instead of two):
    - no driver for the TPM, as a Pi image without tpm_tis_spi: the kernel never gets the TPM, so it
      neither answers (T1), nor registers as an RNG (T2), nor delivers a byte (T3);
    - trousers' tcsd unmasked, enabled and given a TPM 1.2 it can run on (an unmasked tcsd exits on
      a TPM 2.0: tests/support/sabotage.py TCSD_ON_TPM12; it reaches the host's TPM 1.2 over the
      network, so the missing driver does not stop it): T4."""
    with tpm12_on_host(tmp_path / "tpm12") as port:
        image = s.sabotaged_copy(tpm_image, tmp_path / "out", "no-tpm-driver-tcsd-on",
                                 [s.no_tpm_driver, s.trousers_on(HOST_FROM_GUEST, port)])
        with timed("boot", "tpm (debian-arm64-tpm, no TPM driver, tcsd enabled)"):
            report = tpm_boot_test(image, read_manifest(image))
    verdicts, details = _verdicts(report)
    assert verdicts == {"T1": False, "T2": False, "T3": False, "T4": False}, details
    assert re.fullmatch(r"/dev/tpmrm0 did not answer: No such file or directory", details["T1"]), details["T1"]
    assert re.fullmatch(r"not registered: the TPM \(tpm-rng\)", details["T2"]), details["T2"]
    assert re.fullmatch(r"the TPM delivered 0 random bytes, taken by nobody", details["T3"]), details["T3"]
    assert report["counts"]["tpm"]["commands"] == 0, report["counts"]  # not one command reached the TPM
    assert re.fullmatch(r"tcsd runs: \['trousers\.service', 'tcsd\.service'\]", details["T4"]), details["T4"]
    assert report["probe"]["tcsd_running"]
