"""The --host-keys part of the flash benchmark: how to write a card's keys into its ext4 root without
mounting it (e2fsprogs' debugfs against a libguestfs appliance, per card, each with its read-back), and
what --host-keys adds to `invoke flash` per card (1 card and 4 cards, with and without it).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from firstboot.entropi_firstboot.config import DEFAULTS
from stages.flash.hostkeys import (
    HostKeys,
    make_keys,
    manifest_path,
    plan_host_keys,
    private_dir,
    root_fs,
    verify_files,
)
from stages.flash.write import flash
from stages.image.ext4 import Ext4File, put_files
from stages.image.guest import open_guest

RUNS = 3
Fleet = Callable[[Path, int, "HostKeys | None"], float]  # (image, cards, plan) -> seconds


def ensure_manifest(image: Path, built: Path) -> None:
    """The built image's manifest beside the benchmark's copy; a generated image gets the recipe's default key
    types (ed25519, ecdsa 521, rsa 4096: what --host-keys makes for a default build)."""
    wanted = manifest_path(image)
    if wanted.exists():
        return
    source = manifest_path(built)
    if image.resolve() == built.resolve() and source.exists():
        wanted.symlink_to(source)
    else:
        wanted.write_text(json.dumps({"firstboot": {"settings": {"key_types": DEFAULTS["key_types"]}}}) + "\n")


def with_debugfs(card: Path, files: list[Ext4File]) -> None:
    put_files(root_fs(card), files)
    verify_files(card, root_fs(card), files)


def with_guestfs(card: Path, files: list[Ext4File]) -> None:
    """The same files through a libguestfs appliance: launch, mount partition 2, upload, mode, owner,
    read back, unmount."""
    g = open_guest([(card, "raw", False)], where=str(card))
    try:
        g.mount("/dev/sda2", "/")
        for f in files:
            g.mkdir_p(str(Path(f.path).parent))
            g.upload(str(f.source), f.path)
            g.chmod(f.mode, f.path)
            g.chown(0, 0, f.path)
        for f in files:
            assert g.read_file(f.path) == f.source.read_bytes(), f.path
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def writer_figures(image: Path, card: Callable[[], Path], plan: HostKeys) -> None:
    """debugfs against libguestfs on freshly flashed cards, the same keys each time."""
    times: dict[str, list[float]] = {"debugfs": [], "libguestfs": []}
    with private_dir() as tmp:
        _, files = make_keys(plan, "bench", tmp)
        for _ in range(RUNS):
            for name, write in (("debugfs", with_debugfs), ("libguestfs", with_guestfs)):
                dev = card()
                flash(image, dev, yes=True, to_file=False, force_non_removable=True, hostname=None)
                start = time.monotonic()
                write(dev, files)
                times[name].append(time.monotonic() - start)
    for name, runs in times.items():
        print(f"hostkeys_write_{name}_seconds: {statistics.median(runs):.2f} s per card (write {len(files)} files "
              f"+ read back; runs: {', '.join(f'{x:.2f}' for x in runs)})")
    print(f"hostkeys_writer: {min(times, key=lambda n: statistics.median(times[n]))} is faster (flash uses debugfs)")


def cost_figures(image: Path, fleet: Fleet, plan: HostKeys) -> None:
    """`invoke flash` with and without --host-keys, 1 card and 4 cards: the extra seconds per card."""
    for count in (1, 4):
        without, with_keys = [], []
        for _ in range(RUNS):
            without.append(fleet(image, count, None))
            with_keys.append(fleet(image, count, plan))
        extra = (statistics.median(with_keys) - statistics.median(without)) / count
        print(f"hostkeys_{count}_card_seconds: {statistics.median(without):.2f} s without, "
              f"{statistics.median(with_keys):.2f} s with --host-keys (runs: "
              f"{', '.join(f'{x:.2f}' for x in with_keys)})")
        print(f"hostkeys_extra_seconds_per_card_{count}: {extra:.2f} s ({', '.join(_types(plan))})")


def _types(plan: HostKeys) -> list[str]:
    return [t if bits is None else f"{t}-{bits}" for t, bits in plan.key_types]


def figures(image: Path, built: Path, card: Callable[[], Path], fleet: Fleet, work: Path) -> None:
    ensure_manifest(image, built)
    plan = plan_host_keys(image, known_hosts=work / "known_hosts", sshfp=work / "sshfp.zone")
    writer_figures(image, card, plan)
    cost_figures(image, fleet, plan)
