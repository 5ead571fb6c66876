"""Bytes per second each hardware RNG source delivers inside the guest (the TPM boot's machine).

Boots a Debian-built arm64 image (default out/debian-arm64-tpm.img, or argv[1]) once under
-M virt with swtpm and virtio-rng, like `invoke boot-test --tpm`, with
`entropi.tpmbench=SECONDS` (ENTROPI_BENCH_TPM_SECONDS, default 5): the guest probe reads
/dev/hwrng for that long with each registered hwrng made current in turn, then loops
TPM2_GetRandom(32) through /dev/tpmrm0. The host's counters are printed beside them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.boottest.tpm import run_tpm  # noqa: E402


def main() -> None:
    image = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out" / "debian-arm64-tpm.img")
    if not Path(image).is_file():
        print(f"error: bench tpm: {image}: no such image (hint: invoke build --recipe recipes/debian-arm64-tpm.toml)")
        sys.exit(2)
    seconds = int(os.environ.get("ENTROPI_BENCH_TPM_SECONDS", "5"))
    report = run_tpm(image, bench_seconds=seconds)
    for source, rate in sorted((report.get("bench") or {}).items()):
        print(f"{source}: {rate} bytes/s")
    print(f"host counts at the end: {report.get('counts_end')}")
    print(f"qualities: {report.get('quality')}")
    if not report.get("bench"):
        print("error: bench tpm: the guest printed no figures (hint: see out/*.tpm-boot.log)")
        sys.exit(1)


if __name__ == "__main__":
    main()
