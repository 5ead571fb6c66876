"""The boot report as Markdown: what a CI job summary ($GITHUB_STEP_SUMMARY) and out/NAME.boot-report.md show.

    render(report) -> a title, the verdict, one table row per check (its evidence too), the retries,
                      and card B's first boot as a Mermaid gantt chart (seconds since power on)

Only the report dict is read (the JSON written beside it), so an old report renders as well.
A check's ``ok`` may be None: not applicable, its ``detail`` says why.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

# The boot in the order things happen; names not listed here keep their place by time.
TIMELINE = ["power on", "kernel", "hwrng", "crng ready", "keys", "sshd", "login"]
EVIDENCE_CHARS = 60  # one value in the evidence column, at most


def render(report: dict[str, Any]) -> str:
    """The whole report as Markdown (GitHub flavoured, with a mermaid block)."""
    checks = report.get("checks", [])
    lines = [f"## Boot test: {Path(str(report.get('image', '?'))).name} ({report.get('arch', '?')})", "",
             verdict(report), "", "| # | check | result | detail | evidence |", "|---|---|---|---|---|"]
    lines += [check_row(c) for c in checks]
    retries = report.get("retries") or []
    if retries:
        lines += ["", f"Retries after an emulator fault ({len(retries)}):", ""]
        lines += [f"- card {r.get('card', '?')}, boot {r.get('boot', '?')}: {r.get('fault', '?')} "
                  f"({code(str(r.get('console', '')))})" for r in retries]
    lines += ["", *timeline(report.get("timings", {}).get("B", {}))]
    return "\n".join(lines) + "\n"


def verdict(report: dict[str, Any]) -> str:
    checks = report.get("checks", [])
    failed = [str(c.get("number")) for c in checks if c.get("ok") is False]
    passed = sum(c.get("ok") is True for c in checks)
    na = sum(c.get("ok") is None for c in checks)
    ok = report.get("passed", not failed) and not failed
    line = f"**{'PASS' if ok else 'FAIL'}**: {passed} of {len(checks)} checks passed"
    if failed:
        line += f", {len(failed)} failed ({', '.join(failed)})"
    if na:
        line += f", {na} not applicable"
    return line


def check_row(check: dict[str, Any]) -> str:
    ok = check.get("ok")
    result = "N/A" if ok is None else "PASS" if ok else "**FAIL**"
    cells = [str(check.get("number", "")), cell(str(check.get("name", ""))), result,
             cell(str(check.get("detail", ""))), evidence(check.get("evidence"))]
    return "| " + " | ".join(cells) + " |"


def evidence(value: Any) -> str:
    """A check's evidence dict, compactly: `key=value` code spans, long values cut."""
    if not isinstance(value, dict) or not value:
        return ""
    return " ".join(code(f"{key}={_compact(item)}") for key, item in value.items())


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= EVIDENCE_CHARS else text[:EVIDENCE_CHARS - 1] + "…"


def cell(text: str) -> str:
    """Text safe inside a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    """A code span safe inside a table cell (no backticks inside, pipes escaped as GFM wants)."""
    return "`" + cell(text).replace("`", "'") + "`"


def milestones(timing: dict[str, Any]) -> list[tuple[str, float]]:
    """(name, seconds since power on) in time order; 'sshd' from ssh_seconds when the log gave none."""
    found = {str(k): float(v) for k, v in (timing.get("milestones") or {}).items() if isinstance(v, int | float)}
    if "sshd" not in found and isinstance(timing.get("ssh_seconds"), int | float):
        found["sshd"] = float(timing["ssh_seconds"])
    found.setdefault("power on", 0.0)
    rank = {name: i for i, name in enumerate(TIMELINE)}
    return sorted(found.items(), key=lambda item: (item[1], rank.get(item[0], len(TIMELINE))))


def timeline(timing: dict[str, Any]) -> list[str]:
    """Card B's first boot as a Mermaid gantt: one bar from each milestone to the next.

    ``dateFormat X`` reads whole Unix seconds (the first bar starts at 0, the epoch) and the bars
    after it are durations (``12.5s``), which may have decimals; ``axisFormat %s`` labels the axis
    in seconds since the epoch, which here is seconds since power on.
    """
    points = milestones(timing)
    if len(points) < 2:
        return ["Card B's first boot recorded no milestones."]
    lines = ["### Card B, first boot (seconds since power on)", "", "```mermaid", "gantt",
             "    dateFormat X", "    axisFormat %s", "    section card B"]
    for i, ((_, before), (name, at)) in enumerate(pairwise(points)):
        start = "0" if i == 0 else f"after m{i - 1}"
        label = "".join(ch for ch in name if ch not in ":;#").strip() or "?"
        lines.append(f"    {label} {at:.1f} s :m{i}, {start}, {_seconds(at - before)}s")
    return [*lines, "```"]


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}".rstrip("0").rstrip(".") or "0"
