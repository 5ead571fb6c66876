"""Several base images built side by side (`invoke base-image --all`), one process each.

mmdebstrap under qemu-user runs one emulated maintainer script at a time, so a base build keeps
about one core busy: on a 2-core host the bookworm arm64 and armhf bases and the trixie base
built together take about as long as the trixie one alone. Each child is this module run as a
program (``python -m stages.source.base_set ARCH SUITE MIRROR``); its lines are printed with
the base's name in front. Two entropis that want the same base build it once (the cache lock
in debian_base.ensure_base).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from stages.core.errors import UserError
from stages.core.paths import ROOT
from stages.core.processes import forget, spawn
from stages.source.debian_base import BaseSpec, ensure_base

ALL = (("arm64", "bookworm"), ("armhf", "bookworm"), ("arm64", "trixie"))  # what the recipes and tests use


def _relay(proc: subprocess.Popen[bytes], label: str, tail: list[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail[:] = [*tail[-4:], line]
        print(f"[{label}] {line}", flush=True)


def build_all(specs: Sequence[BaseSpec]) -> list[tuple[BaseSpec, Path, float]]:
    """Build every missing base of ``specs`` at once; -> (spec, path, seconds) for each, in order.
    One failing build does not stop the others; afterwards a UserError names every failed one."""
    started: list[tuple[BaseSpec, subprocess.Popen[bytes], threading.Thread, list[str], float]] = []
    for spec in specs:
        if spec.path().exists():
            continue
        proc = spawn([sys.executable, "-m", "stages.source.base_set", spec.arch, spec.suite, spec.mirror],
                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        tail: list[str] = []
        relay = threading.Thread(target=_relay, args=(proc, f"{spec.suite} {spec.arch}", tail), daemon=True)
        relay.start()
        started.append((spec, proc, relay, tail, time.monotonic()))
    seconds: dict[BaseSpec, float] = {}
    failed = []
    for spec, proc, relay, tail, t0 in started:
        code = proc.wait()
        relay.join()
        forget(proc)
        seconds[spec] = round(time.monotonic() - t0, 1)
        if code != 0 or not spec.path().exists():
            failed.append(f"{spec.suite} {spec.arch} (exit {code}: {tail[-1] if tail else 'no output'})")
    if failed:
        raise UserError("base-image --all", f"failed: {'; '.join(failed)}",
                        hint="the lines above, marked with the base's name, say why; rerun to build what is missing")
    return [(spec, spec.path(), seconds.get(spec, 0.0)) for spec in specs]


def main(argv: Sequence[str]) -> int:
    arch, suite, mirror = argv
    try:
        print(ensure_base(BaseSpec(arch, suite, mirror)), flush=True)
    except UserError as e:
        print(str(e), file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
