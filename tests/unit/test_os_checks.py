"""Checks 11 (the initramfs resize ran) and 12 (cloud-init finished without errors) on synthetic
first boots of a trixie-shaped card: a good boot passes both; each broken fact fails its check,
and only it, with the reason. The boot-level negative control is tests/boot/test_trixie_boot.py."""

from __future__ import annotations

from typing import Any

import pytest

from stages.boottest.evidence import Boot
from stages.boottest.os_checks import os_checks
from stages.boottest.prepare import Facts

OLD, NEW = "1a2b3c4d", "9f8e7d6c"


def _boot() -> Boot:
    probe: dict[str, Any] = {
        "mounts": {
            "fstab": f"proc /proc proc defaults 0 0\nPARTUUID={NEW}-01 /boot/firmware vfat defaults 0 2\n"
                     f"PARTUUID={NEW}-02 / ext4 defaults,noatime 0 1\n",
            "/": {"source": "/dev/mmcblk0p2", "partuuid": f"{NEW}-02"},
            "/boot/firmware": {"source": "/dev/mmcblk0p1", "partuuid": f"{NEW}-01"},
            "resize_unit": {"Result": "success"},
        },
        "cloud_init": {"exit": 0, "instance_id": "rpios-image\n",
                       "status": {"status": "done", "extended_status": "done", "detail": "DataSourceNoCloud",
                                  "datasource": "nocloud", "errors": [], "recoverable_errors": {}}},
    }
    return Boot("B", probe=probe, card_after={
        "disk_id": NEW, "cmdline_txt": f"console=serial0,115200 root=PARTUUID={NEW}-02 rootfstype=ext4 rootwait"})


def _facts() -> Facts:
    return Facts(disk_id=OLD, resize=True, cloud_init=True, firstboot=True)


def _failed(b: Boot, facts: Facts) -> dict[str, str]:
    return {c.number: c.detail for c in os_checks(b, facts) if c.ok is False}


def test_a_good_trixie_first_boot_passes_both() -> None:
    checks = os_checks(_boot(), _facts())
    assert [(c.number, c.ok) for c in checks] == [("11", True), ("12", True)]
    assert checks[0].evidence["disk_id_before"] == OLD and checks[0].evidence["disk_id_after"] == NEW
    assert checks[1].evidence["datasource"] == "nocloud"


def _break(b: Boot, change: str) -> None:
    p, after = b.probe or {}, b.card_after
    if change == "disk-id-kept":
        after["disk_id"] = OLD
    elif change == "resize-left":
        after["cmdline_txt"] += " resize"
    elif change == "cmdline-old-root":
        after["cmdline_txt"] = after["cmdline_txt"].replace(NEW, OLD)
    elif change == "fstab-old":
        p["mounts"]["fstab"] = p["mounts"]["fstab"].replace(f"{NEW}-01", f"{OLD}-01")
    elif change == "mounted-elsewhere":
        p["mounts"]["/"]["partuuid"] = f"{OLD}-02"
    elif change == "cloud-init-error":
        p["cloud_init"].update(exit=1)
        p["cloud_init"]["status"].update(status="error", errors=["('scripts_user', RuntimeError('runcmd failed'))"])
    elif change == "cloud-init-error-and-warning":
        p["cloud_init"].update(exit=1)
        p["cloud_init"]["status"].update(status="error", errors=["('scripts_user', RuntimeError('runcmd failed'))"])
        p["cloud_init"]["status"]["recoverable_errors"] = {"WARNING": ["Failed to set hostname"]}
    elif change == "cloud-init-running":
        p["cloud_init"]["status"].update(status="running")
    elif change == "cloud-init-no-answer":
        p["cloud_init"] = {"exit": -1, "output": "timed out"}


@pytest.mark.parametrize(("change", "check", "reason"), [
    ("disk-id-kept", "11", f"disk identifier is still {OLD}"),
    ("resize-left", "11", "still carries 'resize'"),
    ("cmdline-old-root", "11", f"does not say root=PARTUUID={NEW}-02"),
    ("fstab-old", "11", "/etc/fstab mounts"),
    ("mounted-elsewhere", "11", f"mounted from {{'/': '{OLD}-02'"),
    ("cloud-init-error", "12", "status 'error', exit 1"),
    ("cloud-init-error-and-warning", "12", "recoverable errors {'WARNING': ['Failed to set hostname']}"),
    ("cloud-init-running", "12", "status 'running'"),
    ("cloud-init-no-answer", "12", "timed out"),
])
def test_each_broken_fact_fails_exactly_its_check(change: str, check: str, reason: str) -> None:
    b = _boot()
    _break(b, change)
    failed = _failed(b, _facts())
    assert list(failed) == [check], failed
    assert reason in failed[check]


def test_warnings_cloud_init_recovered_from_are_shown_not_failed() -> None:
    """Raspberry Pi OS's comment-only user-data: cloud-init logs a WARNING and reports "degraded done"."""
    b = _boot()
    assert b.probe is not None
    b.probe["cloud_init"].update(exit=2)
    b.probe["cloud_init"]["status"].update(
        extended_status="degraded done",
        recoverable_errors={"WARNING": ["Failed at merging in cloud config part from part-001: empty cloud config"]})
    twelve = os_checks(b, _facts())[1]
    assert twelve.ok and "its warnings: ['WARNING: Failed at merging" in twelve.detail
    assert twelve.evidence["extended_status"] == "degraded done"


def test_neither_applies_to_an_image_without_the_mechanisms_or_without_card_b() -> None:
    bookworm = Facts(disk_id=OLD, firstboot=True)
    assert [c.ok for c in os_checks(_boot(), bookworm)] == [None, None]
    assert all("card B was not booted" in c.detail for c in os_checks(None, _facts()))
