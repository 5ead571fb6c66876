"""Boot reliability under emulation: each base image booted N times on fresh cards.

Per board (raspi3b arm64, raspi2b armhf): the pass rate, the median and worst seconds from
QEMU's start to a verified SSH answer (sshd serving the base's own host keys), the median
seconds to `hwrng registered`, and how many boots hit a named emulator fault (each such
boot is retried once, as the tests do, and counted here). Boots run one after another, never
two guests at once. Usage: bench/boot.py [N] (default 5; ENTROPI_BENCH_BOOTS too).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.boottest.base_boot import baked_keys, boot_base, key_types  # noqa: E402
from stages.boottest.machine import QEMU  # noqa: E402
from stages.source.debian_base import BaseSpec, ensure_base  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("ENTROPI_BENCH_BOOTS", "5"))
    boards = os.environ.get("ENTROPI_BENCH_ARCHES", "arm64,armhf").split(",")
    rows = []
    for arch in boards:
        base = ensure_base(BaseSpec(arch))
        expected = key_types(baked_keys(base))
        ssh, hwrng, faults, passed = [], [], 0, 0
        for i in range(1, n + 1):
            with tempfile.TemporaryDirectory(prefix="entropi-bench-boot-") as tmp:
                t0 = time.monotonic()
                boot = boot_base(base, arch, Path(tmp), expected_types=expected, label=str(i))
                faults += len(boot.emulator_faults)
                last = boot.last
                verdict = "ok" if boot.ok else f"FAILED ({last.failure or last.error})"
                print(f"{arch} boot {i}/{n}: {verdict}; hwrng {last.hwrng_seconds}s, ssh {last.ssh_seconds}s, "
                      f"emulator faults {len(boot.emulator_faults)}, {time.monotonic() - t0:.0f}s in all", flush=True)
                for k, attempt in enumerate(boot.attempts, 1):  # keep what failed, for a look
                    if attempt.failure or attempt.error:
                        kept = ROOT / "out" / f"bench-boot-{arch}-{i}-{k}.log"
                        kept.parent.mkdir(exist_ok=True)
                        shutil.copyfile(attempt.console, kept)
                        print(f"  console kept in {kept}")
                if boot.ok:
                    passed += 1
                    ssh.append(last.ssh_seconds or 0.0)
                    hwrng.append(last.hwrng_seconds or 0.0)
        rows.append((arch, QEMU[arch][1], passed, n, ssh, hwrng, faults))
    print(f"{'board':<16} {'passed':>7} {'median ssh':>11} {'worst ssh':>10} {'median hwrng':>13} {'emu faults':>11}")
    for arch, machine, passed, total, ssh, hwrng, faults in rows:
        med = f"{statistics.median(ssh):.1f}s" if ssh else "-"
        worst = f"{max(ssh):.1f}s" if ssh else "-"
        hw = f"{statistics.median(hwrng):.1f}s" if hwrng else "-"
        print(f"{machine + ' ' + arch:<16} {f'{passed}/{total}':>7} {med:>11} {worst:>10} {hw:>13} {faults:>11}")


if __name__ == "__main__":
    main()
