"""Checks of the image's own first-boot mechanisms that entropi keeps (Raspberry Pi OS trixie).

11: the initramfs resize ran: the card's disk identifier (read on the host from the card's MBR
after the boot) is new, cmdline.txt on the card (read on the host) and /etc/fstab name the new
PARTUUIDs and no longer carry ``resize``, and the kernel mounted / and the boot partition from
partitions that carry them (blkid probes the device). Partition 2 reaching the card's end and
the file system growing are check 9.
12: cloud-init finished its first run without errors: ``cloud-init status --wait --long``, run
by the probe once cloud-init is done, and /run/cloud-init/result.json. cloud-init's own line is
kept: ``errors`` (a stage or module failed) fail the check; ``recoverable_errors`` (warnings it
logged, "degraded done") are listed in the detail and the evidence. Raspberry Pi OS's own
comment-only user-data makes one ("empty cloud config").
"""

from __future__ import annotations

import re
from typing import Any

from stages.boottest.checks import Check, _check, not_applicable
from stages.boottest.evidence import Boot
from stages.boottest.prepare import Facts

RESIZE = ("11", "the image's initramfs resize ran")
CLOUD_INIT = ("12", "cloud-init finished without errors")


def _fstab_ids(fstab: str) -> dict[str, str]:
    """Mount point -> the PARTUUID /etc/fstab mounts it from."""
    found = {}
    for line in fstab.splitlines():
        words = line.split()
        if len(words) >= 2 and not words[0].startswith("#"):
            m = re.fullmatch(r"PARTUUID=([0-9a-fA-F]{8}-\d\d)", words[0])
            if m:
                found[words[1]] = m.group(1).lower()
    return found


def resize_ran(b: Boot, facts: Facts, boot_dir: str) -> Check:
    after = b.card_after or {}
    mounts = (b.probe or {}).get("mounts", {})
    new = str(after.get("disk_id") or "")
    cmdline = str(after.get("cmdline_txt") or "").split()
    fstab = _fstab_ids(mounts.get("fstab") or "")
    mounted = {"/": (mounts.get("/") or {}).get("partuuid", ""),
               boot_dir: (mounts.get(boot_dir) or {}).get("partuuid", "")}
    want = {"/": f"{new}-02", boot_dir: f"{new}-01"}
    problems = []
    if not new or new == facts.disk_id:
        problems.append(f"the card's disk identifier is still {facts.disk_id}")
    if "resize" in cmdline:
        problems.append("cmdline.txt on the card still carries 'resize'")
    if f"root=PARTUUID={want['/']}" not in cmdline:
        problems.append(f"cmdline.txt on the card does not say root=PARTUUID={want['/']}")
    if {k: fstab.get(k) for k in want} != want:
        problems.append(f"/etc/fstab mounts {fstab}, not {want}")
    if mounted != want:
        problems.append(f"mounted from {mounted}, not {want}")
    ev = {"disk_id_before": facts.disk_id, "disk_id_after": new, "cmdline_txt_after": after.get("cmdline_txt"),
          "fstab": fstab, "mounted_partuuids": mounted, "resize_unit": mounts.get("resize_unit")}
    return _check(*RESIZE, not problems,
                  f"disk identifier {facts.disk_id} -> {new}; cmdline.txt, /etc/fstab and the mounts agree on it; "
                  "'resize' gone from cmdline.txt", "; ".join(problems), ev)


def cloud_init_done(b: Boot) -> Check:
    report: dict[str, Any] = (b.probe or {}).get("cloud_init") or {}
    status = report.get("status") or {}
    errors = status.get("errors") or []
    recoverable = status.get("recoverable_errors") or {}
    ok = report.get("exit") in (0, 2) and status.get("status") == "done" and not errors
    warnings = [f"{level}: {text}" for level, texts in sorted(recoverable.items()) for text in texts] \
        if isinstance(recoverable, dict) else [str(recoverable)]
    ev = {"status": status.get("status"), "extended_status": status.get("extended_status"),
          "detail": status.get("detail"), "datasource": status.get("datasource"), "errors": errors,
          "recoverable_errors": recoverable, "exit": report.get("exit"),
          "instance_id": (report.get("instance_id") or "").strip(), "result_json": report.get("result_json")}
    return _check(*CLOUD_INIT, ok,
                  f"cloud-init status {status.get('status')!r} ({status.get('detail')}), datasource "
                  f"{status.get('datasource')!r}, no errors" + (f"; its warnings: {warnings}" if warnings else ""),
                  f"cloud-init status {status.get('status')!r}, exit {report.get('exit')}, errors {errors}, "
                  f"recoverable errors {recoverable} {report.get('output', '')}".strip(), ev)


def os_checks(b: Boot | None, facts: Facts) -> list[Check]:
    """Checks 11 and 12 on card B's first boot, where the image has the mechanism."""
    boot_dir = str(facts.firstboot_config.get("boot_dir") or "/boot/firmware")
    return [
        resize_ran(b, facts, boot_dir) if b and facts.resize else
        not_applicable(*RESIZE, "the image has no initramfs resize" if b else "card B was not booted"),
        cloud_init_done(b) if b and facts.cloud_init else
        not_applicable(*CLOUD_INIT, "the image has no cloud-init" if b else "card B was not booted"),
    ]
