"""Several cards at once: every card is checked before any is written, then all are written side by side.

    flash_cards(image, [/dev/sdb, /dev/sdc, ...], hostname="pi-{n:02}")
        -> a host name per card (a pattern of n, or a list) -> every refusal of every device
           (one refused device: nothing is written to any) -> one confirmation for all
        -> one thread per card: write (bmaptool per card), read back, host name (and cloud-init's
           seed, each card with its own instance-id)
        -> a CardResult per card; a card that fails does not stop the others

Each card's copy is a process of its own (bmaptool, or a decompressor) and its read-back hashes
with the GIL released, so the cards really are written at the same time.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from stages.core import progress
from stages.core.checks import hostname_check
from stages.core.errors import UserError
from stages.core.processes import kill_children
from stages.flash.device import Device, inspect_device, open_exclusive, refuse_unsafe
from stages.flash.hostkeys import HostKeys, PublicKey, need_names, private_dir, put_host_keys
from stages.flash.known_hosts import record_on_host
from stages.flash.nocloud import Seed, plan_seed
from stages.flash.source import Source, open_source
from stages.flash.write import terminal_confirm, write_card

PutKeys = Callable[[Path, str], tuple[PublicKey, ...]]  # (card, host name) -> the keys put on it
COLUMNS = ("device", "serial", "host name", "bytes", "seconds", "verified")


@dataclass(frozen=True)
class CardResult:
    device: str
    serial: str
    hostname: str | None
    bytes_written: int
    seconds: float
    verified: bool
    error: str = ""  # the failure as one `error: ...` line; empty for a good card
    host_keys: tuple[PublicKey, ...] = ()  # with --host-keys: the keys written (public parts only)


class Refused(UserError):
    """Devices that may not be written, one line each; nothing was written to any device."""

    def __init__(self, refusals: list[UserError], count: int) -> None:
        self.refusals = refusals
        super().__init__("flash", f"{len(refusals)} of {count} devices refused, nothing was written",
                         hint="fix or leave out the devices above, then run again")

    def render(self) -> str:
        return "\n".join([*(e.render() for e in self.refusals), super().render()])


def hostnames(spec: str, count: int, first: int = 1) -> list[str | None]:
    """One host name per card from --hostname: a pattern of n (pi-{n:02}, n from ``first``), a comma list, or ''."""
    if not spec:
        return [None] * count
    if "{" in spec or "}" in spec:
        try:
            names = [spec.format(n=first + i) for i in range(count)]
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise UserError("flash", f"--hostname {spec!r} is not a pattern of n ({type(e).__name__}: {e})",
                            hint="write the card's number as {n} or {n:02}: pi-{n:02} gives pi-01, pi-02") from None
    else:
        names = [name.strip() for name in spec.split(",")]
        if len(names) != count:
            raise UserError("flash", f"--hostname names {len(names)} card(s) for {count} device(s)",
                            hint="give one name per --device (a,b,c) or a pattern such as pi-{n:02}")
    for name in names:
        if bad := hostname_check(name):
            raise UserError("flash", f"--hostname: {bad[0]}", hint=bad[1])
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise UserError("flash", f"--hostname gives {twice!r} to two cards", hint="give every card its own name")
    return list(names)


def flash_cards(image: Path, targets: list[Path], *, yes: bool, force_non_removable: bool, hostname: str = "",
                first: int = 1, sysfs: Path = Path("/sys"), mountinfo: Path = Path("/proc/self/mountinfo"),
                confirm: Callable[[str], bool] | None = None, host_keys: HostKeys | None = None,
                user_data: Path | None = None) -> list[CardResult]:
    """Write ``image`` to every card in ``targets`` at once, each read back and given its host name
    (and with ``host_keys``, keys of its own, recorded in known_hosts and the SSHFP zone file).

    Raises UserError (Refused for the devices) before anything is written; after that a card's
    failure is its CardResult's ``error`` and the other cards go on.
    """
    names = hostnames(hostname, len(targets), first)
    if host_keys is not None:
        need_names(names)
    src = open_source(image)
    seed = plan_seed(src, names, user_data)  # fails before writing; reads the image's boot partition
    devices = check_devices(targets, src, force_non_removable=force_non_removable, sysfs=sysfs, mountinfo=mountinfo)
    cards = list(zip(devices, names, strict=True))
    confirm_all(cards, image, yes=yes, confirm=confirm)
    if host_keys is None:
        return write_all(src, cards, seed=seed)
    with private_dir(host_keys.tmp_root) as tmp:
        results = write_all(src, cards, functools.partial(put_host_keys, host_keys, workdir=tmp), seed)
    record_on_host(host_keys, {r.hostname: r.host_keys for r in results if r.verified and r.hostname})
    return results


def check_devices(targets: list[Path], src: Source, *, force_non_removable: bool, sysfs: Path,
                  mountinfo: Path) -> list[Device]:
    """Every refusal of every device (device.py's rules, a device given twice, one held by another program)."""
    devices: list[Device] = []
    refusals: list[UserError] = []
    seen: dict[str, Path] = {}
    for target in targets:
        try:
            dev = inspect_device(target, sysfs)
            if dev.name in seen:
                raise UserError(str(target), f"is {seen[dev.name]} again", hint="give each card once")
            seen[dev.name] = target
            refuse_unsafe(dev, src.size, force_non_removable=force_non_removable, sysfs=sysfs, mountinfo=mountinfo)
            os.close(open_exclusive(target, os.O_RDONLY))  # the kernel's word: nothing has it claimed
            devices.append(dev)
        except UserError as e:
            refusals.append(e)
    if len(refusals) == 1 and len(targets) == 1:
        raise refusals[0]
    if refusals:
        raise Refused(refusals, len(targets))
    return devices


def confirm_all(cards: list[tuple[Device, str | None]], image: Path, *, yes: bool,
                confirm: Callable[[str], bool] | None) -> None:
    """One question for all cards: what each one is (model, size, serial) and the name it gets."""
    lines = [f"write {image.name} to {len(cards)} card(s); everything on them will be lost:"]
    lines += [f"  {dev.path}: {dev.describe()}" + (f" -> {name}" if name else "") for dev, name in cards]
    if yes:
        progress.info("\n".join(lines))
        return
    answers = ["yes"] + ([cards[0][0].name, str(cards[0][0].path)] if len(cards) == 1 else [])
    if not (confirm or terminal_confirm("flash", answers))("\n".join([*lines, "Type 'yes' to go on: "])):
        raise UserError("flash", "not confirmed, nothing was written", hint="type 'yes', or pass --yes")


def write_all(src: Source, cards: list[tuple[Device, str | None]], put_keys: PutKeys | None = None,
              seed: Seed | None = None) -> list[CardResult]:
    """A thread per card, one progress board; Ctrl-C kills every card's copy and then stops."""
    with progress.board() as board, ThreadPoolExecutor(len(cards), thread_name_prefix="card") as pool:
        futures = [pool.submit(write_one, src, dev, name, _meter(board, dev), put_keys, seed) for dev, name in cards]
        try:
            return [f.result() for f in futures]
        except BaseException:
            kill_children()  # bmaptool and decompressors; their threads then fail and end
            raise


def _meter(board: Progress, dev: Device) -> progress.Meter:
    @contextmanager
    def meter(description: str, total: int | None) -> Iterator[progress.Bar]:
        with progress.bar(f"{dev.name} {description}", total, on=board) as bar:
            yield bar

    return meter


def write_one(src: Source, dev: Device, hostname: str | None, meter: progress.Meter,
              put_keys: PutKeys | None = None, seed: Seed | None = None) -> CardResult:
    """Write, read back and name one card (and put its host keys); its failure is returned, not raised."""
    start = time.monotonic()
    keys: tuple[PublicKey, ...] = ()
    try:
        os.close(open_exclusive(dev.path, os.O_WRONLY))  # a lock switch sysfs did not show fails here, alone
        written, _, _ = write_card(src, dev.path, hostname, sparse=False, meter=meter, seed=seed)
        if put_keys is not None and hostname is not None:
            keys = put_keys(dev.path, hostname)
    except (UserError, OSError) as e:
        line = e.render() if isinstance(e, UserError) else f"error: {dev.path}: {e.strerror or e}"
        progress.info(f"{dev.path}: FAILED ({line.removeprefix('error: ')})")
        return CardResult(str(dev.path), dev.serial, hostname, 0, round(time.monotonic() - start, 1), False, line)
    seconds = round(time.monotonic() - start, 1)
    progress.info(f"{dev.path}: written and verified in {seconds:.1f}s" + (f" as {hostname}" if hostname else ""))
    return CardResult(str(dev.path), dev.serial, hostname, written, seconds, True, host_keys=keys)


def table(results: list[CardResult]) -> str:
    """The cards in columns (device, serial, host name, bytes, seconds, verified), then each failure's line."""
    rows = [COLUMNS] + [(r.device, r.serial or "unknown", r.hostname or "-", str(r.bytes_written),
                         f"{r.seconds:.1f}", "yes" if r.verified else "FAILED") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    good = sum(r.verified for r in results)
    lines.append(f"{good} of {len(results)} card(s) written and verified"
                 + (f", {len(results) - good} failed:" if good < len(results) else ""))
    keys = [f"host key of {r.hostname}: {key.fingerprint}" for r in results for key in r.host_keys]
    return "\n".join(lines + [r.error for r in results if r.error] + keys)
