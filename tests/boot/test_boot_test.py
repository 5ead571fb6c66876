"""`invoke boot-test --recipe recipes/debian-arm64.toml`, the command users run: it builds the
offline recipe (shrunk, with entropi-growroot) and passes every check under TCG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages.image.disk import read_mbr
from tests.conftest import ROOT, need_tools

pytestmark = pytest.mark.boot


def test_invoke_boot_test_on_the_offline_recipe_passes_every_check(base_arm64: Path, tmp_path: Path) -> None:
    need_tools("qemu-system-aarch64", "qemu-img", "ssh", "ssh-keyscan", "ssh-keygen")
    invoke = Path(sys.executable).with_name("invoke")
    done = subprocess.run([str(invoke), "-r", str(ROOT), "boot-test", "--recipe",
                           str(ROOT / "recipes" / "debian-arm64.toml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    report = json.loads((out / "debian-arm64.boot-report.json").read_text())
    assert [c["number"] for c in report["checks"]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert report["passed"] and all(c["ok"] for c in report["checks"])
    assert "PASS  9. root grows to the card" in done.stdout
    assert (out / "debian-arm64.boot.log").read_text().count("hwrng registered") >= 1
    # image.shrink: the file ends with the shrunk root partition (grown by +256M and the
    # packages first, so it is compared with what it was before the shrink, not with the base)
    manifest = json.loads((out / "debian-arm64.manifest.json").read_text())
    shrink = manifest["image"]["shrink"]
    image = out / "debian-arm64.img"
    assert image.stat().st_size == shrink["file_bytes_after"] < shrink["file_bytes_before"]
    root = read_mbr(image).partitions[1]
    assert root.start + root.size == image.stat().st_size and root.size >= shrink["root_fs_bytes"]
    assert manifest["image"]["first_boot_expansion"] == "entropi-growroot.service"


def test_every_boot_report_of_this_run_has_its_markdown_summary(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The boot test above wrote out/NAME.boot-report.md beside the JSON (what CI appends to the job summary):
    a row for every check and card A's first boot as a gantt chart. Runs after it, in the same session."""
    reports = sorted(tmp_path_factory.getbasetemp().glob("*/out/*.boot-report.json"))
    if not reports:
        pytest.skip("no boot report in this session: run the whole file, the boot test comes first")
    for path in reports:
        report = json.loads(path.read_text())
        text = path.with_suffix(".md").read_text()
        for check in report["checks"]:
            assert f"| {check['number']} | {check['name']} | " in text, check
        assert "```mermaid\ngantt\n    dateFormat X\n    axisFormat %s\n" in text
