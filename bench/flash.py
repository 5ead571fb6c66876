"""Flash benchmark: `invoke flash` (bmap + read-back verify) against `dd bs=4M conv=fsync`, on a loop device;
then 1 card against 4 cards written at once (`--device` four times, each with its host name); then
--host-keys: debugfs against libguestfs per card, and the seconds it adds per card (bench/_hostkeys.py).

Uses out/debian-arm64.img if it exists (its .bmap, or one made for it), else a generated 1 GiB
Pi-style image that is about 70% empty. Page caches are dropped before each run; every run
ends with an fsync of the cards. Needs root (loop devices, drop_caches).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _hostkeys as hostkeys  # noqa: E402
from stages.flash.fleet import flash_cards  # noqa: E402
from stages.flash.hostkeys import HostKeys  # noqa: E402
from stages.flash.source import open_source  # noqa: E402
from stages.flash.write import flash  # noqa: E402
from tests.support.flash_sample import MIB, make_sample_image  # noqa: E402

BUILT = ROOT / "out" / "debian-arm64.img"
RUNS = 5
FLEET_RUNS = 3


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@contextmanager
def fresh_cards(work: Path, size: int, count: int) -> Iterator[list[Path]]:
    """``count`` loop devices over new sparse files of ``size`` bytes; detached and removed afterwards."""
    with ExitStack() as stack:
        devs = []
        for i in range(count):
            backing = work / f"card{i}"
            with open(backing, "wb") as f:
                f.truncate(size)
            stack.callback(backing.unlink, missing_ok=True)
            dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                                 capture_output=True, text=True).stdout.strip()
            stack.callback(subprocess.run, ["losetup", "-d", dev], check=False)
            devs.append(Path(dev))
        yield devs


def timed_on_fresh_card(work: Path, size: int, run: Callable[[Path], object]) -> tuple[float, object]:
    """Run ``run(loopdev)`` on a fresh sparse card of ``size`` bytes; seconds include the final fsync."""
    with fresh_cards(work, size, 1) as (dev,):
        drop_caches()
        start = time.monotonic()
        result = run(dev)
        return time.monotonic() - start, result


def fleet_seconds(work: Path, image: Path, size: int, count: int, host_keys: HostKeys | None = None) -> float:
    """`invoke flash` with ``count`` fresh cards at once (pattern host names; with ``host_keys``, --host-keys):
    seconds until all are verified."""
    with fresh_cards(work, size, count) as devs:
        drop_caches()
        start = time.monotonic()
        results = flash_cards(image, devs, yes=True, force_non_removable=True, hostname="bench-{n}",
                              host_keys=host_keys)
        seconds = time.monotonic() - start
    assert all(r.verified for r in results), [r.error for r in results]
    return seconds


def fleet_figures(work: Path, image: Path, size: int) -> None:
    """1 card, then 4 at once, alternating; 4.0 would be one card after another, 1.0 four for the price of one."""
    one, four = [], []
    for _ in range(FLEET_RUNS):
        one.append(fleet_seconds(work, image, size, 1))
        four.append(fleet_seconds(work, image, size, 4))
    one_s, four_s = statistics.median(one), statistics.median(four)
    print(f"fleet_runs: {FLEET_RUNS} each, medians below (write + read-back verify + host name)")
    print(f"fleet_1_card_seconds: {one_s:.2f} s (runs: {', '.join(f'{x:.2f}' for x in one)})")
    print(f"fleet_4_cards_seconds: {four_s:.2f} s (runs: {', '.join(f'{x:.2f}' for x in four)})")
    print(f"fleet_ratio_4_to_1: {four_s / one_s:.2f} (4.00 = one after another; {os.cpu_count()} cores, one disk "
          "behind all loop devices)")


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
        fleet_figures(work, image, card_size)
        with ExitStack() as cards:
            hostkeys.figures(image, BUILT, lambda: cards.enter_context(fresh_cards(work, card_size, 1))[0],
                             lambda img, count, plan: fleet_seconds(work, img, card_size, count, plan), work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
