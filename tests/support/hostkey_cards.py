"""Cards flashed with `--host-keys` on loop devices: for the flash tests, the bench and the boot test
of a flashed card.

    flashed = flash_loop_cards(image, work, 2)     # like `invoke flash -d A -d B --hostname pi-{n:02} --host-keys`
    flashed.cards[0]        # card 1's bytes: a sparse file as large as the image (pi-01)
    flashed.known_hosts     # the known_hosts file written at flash time (pi-01, pi-02)

Needs root (losetup). The loop devices are detached before it returns; the card files stay.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from stages.flash.fleet import CardResult, flash_cards
from stages.flash.hostkeys import manifest_path, plan_host_keys
from stages.flash.source import open_source

FAST_KEY_TYPES = [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}]  # for images without a manifest


@dataclass(frozen=True)
class FlashedCards:
    cards: list[Path]  # each card's bytes (the loop device's backing file), in card order
    hostnames: list[str]  # card i is hostnames[i]
    known_hosts: Path  # every card's keys under its host name
    sshfp: Path  # their SSHFP records
    results: list[CardResult]  # as flash_cards returned them (fingerprints in host_keys)


def write_manifest(image: Path, key_types: list[dict[str, object]] | None = None) -> Path:
    """A minimal build manifest beside a sample image: the key types its first boot expects."""
    path = manifest_path(image)
    path.write_text(json.dumps({"firstboot": {"settings": {"key_types": key_types or FAST_KEY_TYPES}}}) + "\n")
    return path


def attach(stack: ExitStack, backing: Path, size: int) -> Path:
    """A loop device over a new sparse file of ``size`` bytes, detached when ``stack`` closes."""
    with open(backing, "wb") as f:
        f.truncate(size)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    stack.callback(subprocess.run, ["losetup", "-d", dev], check=False)
    return Path(dev)


def flash_loop_cards(image: Path, work: Path, count: int = 2, *, hostname: str = "pi-{n:02}",
                     card_bytes: int | None = None, known_hosts: Path | None = None,
                     tmp_root: Path | None = None) -> FlashedCards:
    """Flash ``count`` new cards (files work/card-N.img on loop devices) from ``image`` (with its
    manifest beside it) at once with --host-keys and --hostname ``hostname``; every card must verify.

    known_hosts defaults to work/known_hosts, the SSHFP records go to work/sshfp.zone. ``card_bytes``
    defaults to the image's size.
    """
    size = card_bytes or open_source(image).size
    assert size, f"give card_bytes: the size of {image} is not known before decompressing it"
    plan = plan_host_keys(image, known_hosts=known_hosts or work / "known_hosts", sshfp=work / "sshfp.zone",
                          tmp_root=tmp_root)
    cards = [work / f"card-{i + 1}.img" for i in range(count)]
    with ExitStack() as stack:
        devices = [attach(stack, card, size) for card in cards]
        results = flash_cards(image, devices, yes=True, force_non_removable=True, hostname=hostname,
                              host_keys=plan)
    assert all(r.verified for r in results), [r.error for r in results]
    return FlashedCards(cards, [r.hostname or "" for r in results], plan.known_hosts, plan.sshfp, results)
