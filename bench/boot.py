"""Boot to verified SSH: time per phase (kernel, systemd, first boot, sshd) of the first boot.

Reads the newest out/*.boot-report.json (run `invoke boot-test` first); the milestones are
the seconds after QEMU started at which the serial log first showed: the kernel banner,
systemd, the first-boot verdict and the login prompt; `ssh` is when ssh-keyscan answered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    reports = sorted((ROOT / "out").glob("*.boot-report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        print("no boot report in out/ (run: invoke boot-test --image out/NAME.img --key KEY)")
        sys.exit(0)
    report = json.loads(reports[-1].read_text())
    print(f"report: {reports[-1]}")
    for boot, t in report["timings"].items():
        m = t.get("milestones", {})
        phases = []
        last = 0.0
        for name in ("kernel", "systemd", "firstboot", "login"):
            if name in m:
                phases.append(f"{name} {m[name] - last:+.1f}s")
                last = m[name]
        ssh = t.get("ssh_seconds")
        print(f"boot {boot}: {' '.join(phases)}; sshd answered at {ssh}s (goal for the first boot <= 150 s)")


if __name__ == "__main__":
    main()
