"""The boot report as Markdown (the CI job summary): from a real report, and from one with every kind of row."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stages.boottest.markdown import milestones, render

REAL = Path(__file__).parent / "data" / "debian-arm64.boot-report.json"  # `invoke boot-test` of the offline recipe


def mermaid_blocks(text: str) -> list[list[str]]:
    return [block.strip("\n").splitlines() for block in re.findall(r"```mermaid\n(.*?)```", text, re.S)]


def test_a_real_report_renders_a_row_per_check_and_the_first_boot_as_a_gantt_chart() -> None:
    report = json.loads(REAL.read_text())
    text = render(report)
    lines = text.splitlines()
    assert lines[0] == "## Boot test: debian-arm64.img (arm64)"
    assert "**PASS**: 11 of 11 checks passed" in lines
    for check in report["checks"]:
        row = f"| {check['number']} | {check['name']} | PASS | {check['detail']} | "
        assert any(line.startswith(row) for line in lines), row
        if check["evidence"]:  # the evidence shows, as key=value
            assert f"`{next(iter(check['evidence']))}=" in text
    (gantt,) = mermaid_blocks(text)
    assert gantt == ["gantt", "    dateFormat X", "    axisFormat %s", "    section card B",
                     "    kernel 16.0 s :m0, 0, 16s",
                     "    systemd 29.0 s :m1, after m0, 13s",
                     "    firstboot 116.1 s :m2, after m1, 87.1s",
                     "    sshd 118.1 s :m3, after m2, 2s"]
    assert "Retries" not in text


def report(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": "/srv/out/lab.img", "arch": "armhf", "passed": False,
        "checks": [
            {"number": 1, "name": "hardware RNG", "ok": True, "detail": "hwrng registered",
             "evidence": {"hwrng_bytes": 32, "current": "3f104000.rng"}},
            {"number": 3, "name": "host keys | fresh", "ok": False, "detail": "served 0,\npublished match=False",
             "evidence": {"served": [], "console": "a|b `x`", "long": "k" * 100, "nested": {"a": [1, 2]}}},
            {"number": 9, "name": "root grows to the card", "ok": None,
             "detail": "the image has no entropi-growroot (image.expand = none)"},
        ],
        "retries": [{"card": "C", "boot": "C1", "fault": "tlb-flush-stall", "console": "rcu: INFO | stall"}],
        "timings": {"B": {"milestones": {"login": 80.5, "sshd": 71.0, "keys": 66.2, "kernel": 12.0, "hwrng": 14.5,
                                          "crng ready": 14.5, "firmware": 3.0}, "ssh_seconds": 72.4}},
    }
    return {**base, **extra}


def test_failed_and_not_applicable_checks_with_their_evidence_and_the_retries() -> None:
    lines = render(report()).splitlines()
    assert lines[0] == "## Boot test: lab.img (armhf)"
    assert "**FAIL**: 1 of 3 checks passed, 1 failed (3), 1 not applicable" in lines
    assert "| 1 | hardware RNG | PASS | hwrng registered | `hwrng_bytes=32` `current=3f104000.rng` |" in lines
    assert ("| 3 | host keys \\| fresh | **FAIL** | served 0, published match=False | `served=[]` `console=a\\|b 'x'` "
            f"`long={'k' * 59}…` `nested={{\"a\":[1,2]}}` |") in lines
    assert "| 9 | root grows to the card | N/A | the image has no entropi-growroot (image.expand = none) |  |" in lines
    assert "- card C, boot C1: tlb-flush-stall (`rcu: INFO \\| stall`)" in lines


def test_the_timeline_runs_in_time_order_with_power_on_first_and_ties_in_boot_order() -> None:
    timing = report()["timings"]["B"]
    assert [name for name, _ in milestones(timing)] == ["power on", "firmware", "kernel", "hwrng", "crng ready",
                                                        "keys", "sshd", "login"]
    (gantt,) = mermaid_blocks(render(report()))
    assert gantt[4:] == ["    firmware 3.0 s :m0, 0, 3s", "    kernel 12.0 s :m1, after m0, 9s",
                         "    hwrng 14.5 s :m2, after m1, 2.5s", "    crng ready 14.5 s :m3, after m2, 0s",
                         "    keys 66.2 s :m4, after m3, 51.7s", "    sshd 71.0 s :m5, after m4, 4.8s",
                         "    login 80.5 s :m6, after m5, 9.5s"]


def test_a_boot_with_no_milestones_says_so_instead_of_an_empty_chart() -> None:
    text = render(report(timings={"B": {"milestones": {}, "ssh_seconds": None}}))
    assert "Card B's first boot recorded no milestones." in text and "```mermaid" not in text
    text = render(report(timings={}))
    assert "```mermaid" not in text
