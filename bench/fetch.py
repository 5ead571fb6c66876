"""Fetch benchmark: download and unpack throughput against curl and xz on the same data.

A 1 GiB image-like file (an eighth random, 3/8 a hole of zeros, half real files from /usr,
so xz decompresses at the speed it has on real OS images) is made in /tmp once per run and
deleted at the end. It is served by the test server on 127.0.0.1 (os.sendfile, threaded, in
its own process) and fetched by:

- ``curl -s -o FILE URL`` and by ``stages.source.download.download`` (which also hashes as it goes);
- its ``.xz`` (single block, as one ``xz`` process writes it; then multi-block, as ``xz -T``
  writes it) unpacked by ``xz -dc > FILE`` and by ``stages.source.unpack.unpack`` (``xz -dc -T0``
  writing the file itself, sparse; SHA-256 read behind it as it grows; fsync before the rename).

Each pair runs RUNS times, alternating; medians are printed as ``name: value unit`` and ratios
(ours / classic; goal >= 0.9).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.source.download import download  # noqa: E402
from stages.source.unpack import unpack  # noqa: E402

SIZE = 1 << 30
RUNS = 3
MIB = 1 << 20


def make_image(path: Path) -> None:
    """1/8 random (like already-compressed files), 3/8 a hole (free space), 1/2 real files from /usr (a tar stream)."""
    with open(path, "wb") as f:
        for _ in range(SIZE // 8 // MIB):
            f.write(os.urandom(MIB))
        f.seek(SIZE // 2)
        left = SIZE // 2
        while left > 0:  # /usr is a few GiB; repeat the stream if this system is smaller
            tar = subprocess.Popen(["tar", "cf", "-", "--ignore-failed-read", "/usr/lib", "/usr/share", "/usr/bin"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert tar.stdout is not None
            while left > 0 and (chunk := tar.stdout.read(min(MIB, left))):
                f.write(chunk)
                left -= len(chunk)
            tar.kill()
            tar.wait()


def timed(fn: Callable[[], object], cleanup: Callable[[], None]) -> float:
    cleanup()
    os.sync()
    start = time.monotonic()
    fn()
    seconds = time.monotonic() - start
    cleanup()
    return seconds


def pair(name: str, ours: Callable[[], object], classic: Callable[[], object], cleanup: Callable[[], None],
         nbytes: int, classic_name: str, runs: int = RUNS) -> None:
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        b.append(timed(classic, cleanup))
        a.append(timed(ours, cleanup))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name}_entropi: {nbytes / ma / MIB:.0f} MiB/s")
    print(f"{name}_{classic_name}: {nbytes / mb / MIB:.0f} MiB/s")
    print(f"{name}_ratio: {mb / ma:.2f} (entropi / {classic_name.replace('_', ' ')}; goal >= 0.9)", flush=True)


def main() -> int:
    for tool in ("curl", "xz"):
        if shutil.which(tool) is None:
            print(f"skipped: {tool} is missing")
            return 0
    with tempfile.TemporaryDirectory(prefix="entropi-bench-fetch-", dir="/tmp") as t:
        work = Path(t)
        image = work / "bench.img"
        start = time.monotonic()
        make_image(image)
        subprocess.run(["xz", "-T1", "-1", "-k", str(image)], check=True)
        packed = work / "bench.img.xz"
        print(f"setup: {time.monotonic() - start:.1f} s (1 GiB image, xz {packed.stat().st_size / MIB:.0f} MiB)")
        out = work / "out"
        out_part = work / "out.part"

        def cleanup() -> None:
            for p in (out, out_part):
                p.unlink(missing_ok=True)

        # the server runs in its own process (python tests/support/httpserver.py DIR): no GIL shared with the client
        server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "httpserver.py"), str(work)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip() + "/bench.img"
            pair("download",
                 lambda: download(url, out_part, where="bench", key="url", size=SIZE),
                 lambda: subprocess.run(["curl", "-s", "-o", str(out), url], check=True),
                 cleanup, SIZE, "curl", runs=7)  # seconds each, and loopback figures are noisy
        finally:
            server.kill()
            server.wait()

        def xz_dc(*threads: str) -> Callable[[], object]:
            def go() -> object:
                with open(out, "wb") as f:
                    return subprocess.run(["xz", "-dc", *threads, str(packed)], stdout=f, check=True)
            return go

        ours = lambda: unpack(packed, out, where="bench", key="path", size=SIZE)  # noqa: E731
        pair("unpack_xz", ours, xz_dc(), cleanup, SIZE, "xz_dc")
        subprocess.run(["xz", "-T2", "-1", "-k", "-f", str(image)], check=True)  # multi-block, as xz -T writes
        pair("unpack_xz_multiblock", ours, xz_dc(), cleanup, SIZE, "xz_dc")
        pair("unpack_xz_multiblock_vs_T0", ours, xz_dc("-T0"), cleanup, SIZE, "xz_dc_T0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
