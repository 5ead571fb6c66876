"""Warm build (base cached): per-stage times, and the same edits done the classic way.

Classic way: copy the image, loop-mount the root partition, chroot apt-get install
rng-tools-debian, and a shell script for the edits (keys, seed, machine-id, config.txt via
mtools). Both without compression or bmap. Prints the ratio entropi/classic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.build.pipeline import build  # noqa: E402
from stages.core.recipe import load_recipe  # noqa: E402
from stages.image.disk import read_mbr  # noqa: E402
from stages.source.debian_base import BaseSpec, ensure_base  # noqa: E402

CLASSIC = r"""
set -e
img=$1; root=$2; off=$3; size=$4; fat=$5
loop=$(losetup --find --show --offset "$off" --sizelimit "$size" "$img")
mount "$loop" "$root"
mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"; mount --bind /dev "$root/dev"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends rng-tools-debian >/dev/null
chroot "$root" apt-get clean
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/systemd/random-seed" "$root/usr/sbin/policy-rc.d"
echo uninitialized > "$root/etc/machine-id"
printf 'HRNGDEVICE=/dev/hwrng\nRNGDOPTIONS="--fill-watermark=128"\n' > "$root/etc/default/rng-tools-debian"
echo bcm2835_rng > "$root/etc/modules-load.d/hwrng.conf"
sed -i 's/^root:[^:]*:/root:!:/' "$root/etc/shadow"
umount "$root/dev" "$root/sys" "$root/proc" "$root"; losetup -d "$loop"
mcopy -n -i "$img@@$fat" ::config.txt /tmp/classic-config.txt
echo dtparam=random=on >> /tmp/classic-config.txt
mcopy -o -n -i "$img@@$fat" /tmp/classic-config.txt ::config.txt
"""


def main() -> None:
    base = ensure_base(BaseSpec("arm64"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = work / "bench.toml"
        recipe.write_text('[base]\nsource = "debian"\n[output]\nname = "bench"\ncompress = "none"\nbmap = false\n')
        t0 = time.monotonic()
        manifest = build(load_recipe(recipe), work / "out")
        ours = time.monotonic() - t0
        for stage in manifest["stages"]:
            took = f"{stage['seconds']:.1f} s" if "seconds" in stage else f"skipped ({stage['skipped']})"
            print(f"stage {stage['name']}: {took}")
        print(f"entropi build (warm, no compression): {ours:.1f} s")
        t0 = time.monotonic()
        img = work / "classic.img"
        subprocess.run(["cp", "--sparse=always", str(base), str(img)], check=True)
        mbr = read_mbr(img)
        (work / "root").mkdir()
        p1, p2 = mbr.partitions
        subprocess.run(["bash", "-c", CLASSIC, "classic", str(img), str(work / "root"), str(p2.start), str(p2.size),
                        str(p1.start)], check=True)
        classic = time.monotonic() - t0
        print(f"classic loop mount + chroot script: {classic:.1f} s")
        print(f"ratio entropi/classic: {ours / classic:.2f} (goal <= 1.0)")
        print(json.dumps({"entropi_s": round(ours, 1), "classic_s": round(classic, 1)}))


if __name__ == "__main__":
    main()
