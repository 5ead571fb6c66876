"""Flash benchmark: `invoke flash` (bmap + read-back verify) against `dd bs=4M conv=fsync`, on a loop device.

Uses out/debian-arm64.img if it exists (its .bmap, or one made for it), else a generated 1 GiB
Pi-style image that is about 70% empty. Page caches are dropped before each run; both runs
end with an fsync of the card. Needs root (loop devices, drop_caches).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.flash.source import open_source  # noqa: E402
from stages.flash.write import flash  # noqa: E402
from tests.support.flash_sample import MIB, make_sample_image  # noqa: E402

BUILT = ROOT / "out" / "debian-arm64.img"
RUNS = 5


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed_on_fresh_card(work: Path, size: int, run: Callable[[Path], object]) -> tuple[float, object]:
    """Run ``run(loopdev)`` on a fresh sparse card of ``size`` bytes; seconds include the final fsync."""
    backing = work / "card"
    backing.unlink(missing_ok=True)
    with open(backing, "wb") as f:
        f.truncate(size)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        drop_caches()
        start = time.monotonic()
        result = run(Path(dev))
        return time.monotonic() - start, result
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)


def main() -> int:
    if os.geteuid() != 0:
        print("skipped: needs root (loop devices, drop_caches)")
        return 0
    with tempfile.TemporaryDirectory(prefix="entropi-bench-flash-") as t:
        work = Path(t)
        if BUILT.exists():
            image = work / BUILT.name
            image.symlink_to(BUILT)
            bmap = Path(f"{BUILT}.bmap")
            if bmap.exists():
                (work / bmap.name).symlink_to(bmap)
            else:
                subprocess.run(["bmaptool", "-q", "create", "-o", f"{image}.bmap", str(BUILT)], check=True)
        else:
            image = make_sample_image(work / "pi-style.img", size_mib=1024, boot_mib=256, boot_data=24 * MIB,
                                      root_data=280 * MIB)
        src = open_source(image)
        assert src.bmap is not None and src.size is not None
        card_size = src.size + 64 * MIB
        print(f"image: {image.resolve()}")
        print(f"image_size: {src.size} bytes")
        print(f"image_mapped: {src.bmap.mapped_bytes} bytes ({100 * src.bmap.mapped_bytes / src.size:.0f}%)")

        def dd(dev: Path) -> int:
            subprocess.run(["dd", f"if={image}", f"of={dev}", "bs=4M", "conv=fsync", "status=none"], check=True)
            return src.size or 0

        def bmap_flash(dev: Path) -> dict[str, object]:
            return flash(image, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)

        dd_runs, fl_runs, report = [], [], {}
        for _ in range(RUNS):  # alternate, so a slow spell of the host disk hits both
            dd_runs.append(timed_on_fresh_card(work, card_size, dd)[0])
            seconds, result = timed_on_fresh_card(work, card_size, bmap_flash)
            assert isinstance(result, dict)
            fl_runs.append(seconds)
            report = result
        dd_s, fl_s = statistics.median(dd_runs), statistics.median(fl_runs)
        print(f"runs: {RUNS} each, medians below")
        print(f"dd_bytes_written: {src.size} bytes")
        print(f"dd_seconds: {dd_s:.2f} s (runs: {', '.join(f'{x:.2f}' for x in dd_runs)})")
        print(f"flash_bytes_written: {report['bytes_written']} bytes")
        print(f"flash_write_seconds: {report['write_seconds']:.2f} s (last run)")
        print(f"flash_seconds: {fl_s:.2f} s (write + fsync + read-back verify; runs: "
              f"{', '.join(f'{x:.2f}' for x in fl_runs)})")
        print(f"ratio_flash_to_dd: {fl_s / dd_s:.2f} (goal <= 0.50 when the image is at least half empty)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
