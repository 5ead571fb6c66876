"""`invoke boot-test --image I --tpm`: one boot under -M virt with a TPM 2.0 and a virtio RNG.

Only Debian-built arm64 images (base.source = "debian"): their kernel has the virtio
drivers and the initramfs loads them. The card (a qcow2 overlay) gets the boot test's
vTPM bridge and probe (guest/entropi-vtpm, guest/entropi-tpm-probe) with one libguestfs
pass; the boot runs until the probe's line, when the host's counts are taken; the report
goes to out/NAME.tpm-report.json and the console to out/NAME.tpm-boot.log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.boottest.bootfiles import BootFiles, extract_boot_files
from stages.boottest.machine import card_dir, overlay
from stages.boottest.prepare import GUEST
from stages.boottest.tpm_checks import judge
from stages.boottest.virt import VirtMachine, virt_files
from stages.core import progress
from stages.core.errors import UserError
from stages.image.guest import open_guest
from stages.image.guest_files import write_text

GUEST_DIR = "/usr/lib/entropi-boottest"
GUEST_PROGRAMS = ("entropi-vtpm", "entropi-tpm-probe")
WANTS = "systemd.wants=entropi-vtpm.service systemd.wants=entropi-tpm-probe.service"


def refuse_unless_debian_arm64(image: Path, manifest: dict[str, Any]) -> None:
    source = manifest.get("settings", {}).get("base", {}).get("source")
    arch = manifest.get("image", {}).get("arch")
    if source != "debian" or arch != "arm64":
        what = "no manifest beside it" if not manifest else f"base.source {source!r}, arch {arch!r}"
        raise UserError(str(image), f"--tpm boots only Debian-built arm64 images ({what})",
                        hint="build one: invoke build --recipe recipes/debian-arm64-tpm.toml")


def instrument(disk: Path, image: Path) -> None:
    """Write the vTPM bridge and the probe, with their units, into the card ``disk``."""
    g = open_guest([(disk, "qcow2", False)], str(image))
    try:
        g.mount("/dev/sda2", "/")
        g.mkdir_p(GUEST_DIR)
        for name in GUEST_PROGRAMS:
            write_text(g, f"{GUEST_DIR}/{name}", (GUEST / name).read_text(), 0o755)
            write_text(g, f"/etc/systemd/system/{name}.service", (GUEST / f"{name}.service").read_text(), 0o644)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def _line(m: VirtMachine, tag: str, timeout: float) -> dict[str, Any] | None:
    found = m.wait_for(rf"{tag} (\{{.*\}})\r?\n", timeout)
    return json.loads(found.group(1)) if found else None


def boot(image: Path, work: Path, log: Path, timeout: float, bench_seconds: int = 0) -> dict[str, Any]:
    """One boot; what the probe printed and what the host counted (at the probe's line and at the end)."""
    files = virt_files(extract_boot_files(image, "arm64", work / "files"))
    extra = WANTS + (f" entropi.tpmbench={bench_seconds}" if bench_seconds else "")
    files = BootFiles(files.kernel, files.initrd, files.dtb, f"{files.cmdline} {extra}", files.boot_part)
    with card_dir(work) as cards:
        disk = overlay(image, "raw", cards / "tpm.qcow2", image.stat().st_size)
        with progress.step("write the vTPM bridge and the probe onto the card"):
            instrument(disk, image)
        with VirtMachine(files, disk, "arm64", log, work=cards / "sockets") as m, \
                progress.step("boot under -M virt with swtpm and virtio-rng"):
            probe = _line(m, "ENTROPI-TPM-PROBE", timeout)
            at_probe = m.counts()
            seconds = round(m.elapsed(), 1)
            quality = _line(m, "ENTROPI-TPM-QUALITY", 60) if probe else None
            rates = _line(m, "ENTROPI-TPM-BENCH", 60 + 4 * bench_seconds) if probe and bench_seconds else None
            failure = m.failure()
            return {"probe": probe, "counts": at_probe, "counts_end": m.counts(), "quality": quality,
                    "bench": rates, "probe_seconds": seconds, "milestones": m.milestones,
                    "failure": failure.name if failure else None, "qemu_stderr": m.qemu_stderr()}


def tpm_boot_test(image: Path, manifest: dict[str, Any], timeout: float = 900,
                  bench_seconds: int = 0) -> dict[str, Any]:
    """Boot ``image`` with a TPM and a virtio RNG; judge T1-T4; write the report beside the image."""
    refuse_unless_debian_arm64(image, manifest)
    name = image.name.removesuffix(".img")
    work, log = image.parent / f".tpm-boot-{name}", image.parent / f"{name}.tpm-boot.log"
    t0 = time.monotonic()
    seen = boot(image, work, log, timeout, bench_seconds)
    probe = seen["probe"]
    if probe is None:
        reason = seen["failure"] or (seen["qemu_stderr"] and "QEMU: " + seen["qemu_stderr"]) or "no probe line"
        checks = [{"id": "T0", "name": "the boot reaches the probe", "passed": False,
                   "detail": f"{reason} within {timeout:.0f} s (console: {log})", "evidence": {}}]
    else:
        checks = judge(probe, seen["counts"])
    report = {"image": str(image), "hwrng_tpm": manifest.get("settings", {}).get("hwrng", {}).get("tpm", ""),
              "passed": all(c["passed"] for c in checks), "checks": checks, "seconds": round(time.monotonic() - t0, 1),
              **{k: seen[k] for k in ("counts", "counts_end", "quality", "bench", "probe_seconds", "milestones")},
              "probe": probe}
    (image.parent / f"{name}.tpm-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_tpm(image: str, recipe: str = "", sets: Sequence[str] = (), bench_seconds: int = 0) -> dict[str, Any]:
    """`boot-test --tpm`: the image (or ``recipe``'s output, built first) booted with a TPM."""
    from stages.boottest.run import build_for_boot_test, check_image, read_manifest

    if recipe:
        image = str(build_for_boot_test(recipe, "none", sets)[0])
    if not image:
        raise UserError("boot-test --tpm", "nothing to boot", hint="pass --image out/NAME.img or --recipe R")
    path = Path(image)
    check_image(path)
    manifest = read_manifest(path)
    timeout = manifest.get("settings", {}).get("boot_test", {}).get("timeout", 900)
    return tpm_boot_test(path, manifest, timeout, bench_seconds)


def summary(report: dict[str, Any]) -> str:
    lines = [f"{'PASS' if c['passed'] else 'FAIL'} {c['id']} {c['name']}: {c['detail']}" for c in report["checks"]]
    probe = report.get("probe") or {}
    lines.append(f"rng_available={' '.join(probe.get('rng_available') or [])} rng_current={probe.get('rng_current')} "
                 f"qualities={report.get('quality')} host counts={json.dumps(report.get('counts'))}")
    if report.get("bench"):
        lines.append(f"bytes/s per source: {report['bench']}")
    lines.append(f"boot-test --tpm: {'PASS' if report['passed'] else 'FAIL'} in {report['seconds']} s "
                 f"(probe at {report.get('probe_seconds')} s)")
    return "\n".join(lines)
