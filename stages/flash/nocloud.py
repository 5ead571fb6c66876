"""cloud-init's NoCloud seed on a card's boot partition, per card at flash time (`--hostname`, `--user-data`).

    plan_seed(src, names, user_data)  -> before anything is written: the --user-data file checked
                                         (#cloud-config, YAML, a mapping, its host name agrees with
                                         every card's), the image's seed found -> a Seed, or None when
                                         the image has no cloud-init seed (then --user-data is refused)
    put_seed(card, seed, hostname)    -> per card, after it is written: a fresh instance-id in meta-data
                                         (with local-hostname) and in cmdline.txt's ds=nocloud;i= token,
                                         the user-data, all read back

As Raspberry Pi Imager customises a card of an image with cloud-init: a new instance-id makes
cloud-init treat the card as a new instance. An image has cloud-init here when its boot partition
holds the seed's meta-data, the file cloud-init reads there (``seedfrom: file:///boot/firmware``)
and the one this writes: reading one FAT directory is cheap, also for a compressed image (only
its head, up to the end of partition 1, is decompressed).
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import UserError
from stages.core.processes import forget, spawn
from stages.flash.bootfs import boot_files, boot_partition, put_boot_files, read_boot_file
from stages.flash.source import CHUNK, Source
from stages.source.compression import read_chunks
from stages.textedit.cloud_init import cmdline_ds, meta_data

SEED = "meta-data"  # its presence on the boot partition: the image has cloud-init's NoCloud seed
USER_DATA = "user-data"
CMDLINE = "cmdline.txt"
HEADER = "#cloud-config"
USER_DATA_HINT = "give a cloud-config file: its first line #cloud-config, then YAML (see cloud-init's docs)"


@dataclass(frozen=True)
class Seed:
    """What goes into the seed of every card: the user-data to write (None: the image's stays)."""

    user_data: str | None


def read_user_data(path: Path) -> tuple[str, dict[str, Any]]:
    """The --user-data file's text and its mapping; UserError unless it is a #cloud-config YAML mapping."""
    where = str(path)
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise UserError(where, "--user-data: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise UserError(where, "--user-data: is a directory", hint=USER_DATA_HINT) from None
    except UnicodeDecodeError as e:
        raise UserError(where, f"--user-data: not UTF-8 text (byte {e.start})", hint=USER_DATA_HINT) from None
    if not text.startswith(HEADER):
        first = text.splitlines()[0][:40] if text.strip() else "an empty file"
        raise UserError(where, f"--user-data: does not start with {HEADER} (it starts with {first!r})",
                        hint=f"make {HEADER} its first line; cloud-init ignores a file without it")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise UserError(where, f"--user-data: not valid YAML{at}: {problem}", hint=USER_DATA_HINT) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(where, f"--user-data: is a YAML {type(data).__name__}, not a mapping of settings",
                        hint=USER_DATA_HINT)
    return text, data


def check_hostnames(where: str, data: dict[str, Any], names: Sequence[str | None], what: str = "--user-data") -> None:
    """A user-data that names a host (``hostname``, ``fqdn``) must name every card's --hostname: cloud-init
    sets the host name from user-data before meta-data, and known_hosts lists the card under --hostname."""
    for name in names:
        if name is None:
            continue
        hostname, fqdn = data.get("hostname"), data.get("fqdn")
        if hostname is not None and str(hostname) != name:
            raise UserError(where, f"{what}: hostname {hostname!r} differs from --hostname {name!r}",
                            hint="drop hostname: from the user-data (flash puts --hostname in meta-data), "
                                 "or give the same name")
        if fqdn is not None and str(fqdn).split(".")[0] != name:
            raise UserError(where, f"{what}: fqdn {fqdn!r} does not name --hostname {name!r}",
                            hint=f"make the fqdn {name}.<domain>, or drop fqdn: from the user-data")


def plan_seed(src: Source, names: Sequence[str | None], user_data: Path | None) -> Seed | None:
    """Everything about the seed checked before any card is written; None: leave the seed alone."""
    if user_data is None and not any(names):
        return None
    text, data = read_user_data(user_data) if user_data is not None else (None, {})
    if user_data is not None:
        check_hostnames(str(user_data), data, names)
    with image_boot(src, "--user-data" if user_data is not None else "--hostname") as disk:
        has_seed = SEED in boot_files(disk)
        own = read_boot_file(disk, USER_DATA) if has_seed and text is None else None
    if not has_seed:
        if user_data is not None:
            raise UserError(str(src.path), f"has no cloud-init seed ({SEED} on the boot partition), so "
                            "--user-data would not be read", hint="flash an image with cloud-init (Raspberry Pi "
                            "OS trixie, or recipes/debian-trixie-arm64.toml), or drop --user-data")
        return None
    if own is not None:
        try:
            mine = yaml.safe_load(own)
        except yaml.YAMLError:
            mine = None
        if isinstance(mine, dict):
            check_hostnames(str(src.path), mine, names, f"the {USER_DATA} on its boot partition")
    return Seed(text)


@contextmanager
def image_boot(src: Source, option: str) -> Iterator[Path]:
    """A raw disk holding the image's partition 1: the image itself, or its decompressed head."""
    if src.decompress is None:
        boot_partition(src.path, option)
        yield src.path
        return
    with tempfile.TemporaryDirectory(prefix="entropi-head-") as tmp:
        head = Path(tmp) / "head.img"
        copy_head(src, head, option)
        yield head


def copy_head(src: Source, head: Path, option: str) -> None:
    """Decompress ``src`` into ``head`` (sparse) up to the end of its partition 1, then stop."""
    assert src.decompress is not None
    proc = spawn(src.decompress, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    end: int | None = None
    try:
        assert proc.stdout is not None
        with open(head, "wb") as out:
            for chunk in read_chunks(proc.stdout, CHUNK):
                if chunk.count(0) == len(chunk):
                    out.seek(len(chunk), 1)
                else:
                    out.write(chunk)
                out.truncate(out.tell())
                if end is None:
                    out.flush()
                    boot = boot_partition(head, option)
                    end = boot.start + boot.size
                if out.tell() >= end:
                    break
    finally:
        proc.kill()
        proc.wait()
        forget(proc)
    if end is None or head.stat().st_size < end:
        raise UserError(str(src.path), "ends inside its boot partition", hint="is it complete?")


def instance_id() -> str:
    """A new instance-id: entropi-<ms since the epoch>-<random>, unique also for cards flashed together."""
    return f"entropi-{time.time_ns() // 1_000_000}-{secrets.token_hex(4)}"


def seed_files(meta: str, cmdline: str, seed: Seed, hostname: str | None, iid: str) -> dict[str, str]:
    """The card's new seed files (meta-data, cmdline.txt, user-data) from its present ones."""
    files = {SEED: meta_data(meta, iid, hostname), CMDLINE: cmdline_ds(cmdline, iid)}
    parsed = yaml.safe_load(files[SEED])
    wanted = {"instance-id": iid, **({"local-hostname": hostname} if hostname else {})}
    if not isinstance(parsed, dict) or any(parsed.get(k) != v for k, v in wanted.items()):
        raise ValueError(f"the card's {SEED} cannot be rewritten to say {wanted}")
    if seed.user_data is not None:
        files[USER_DATA] = seed.user_data
    return files


def put_seed(target: Path, seed: Seed, hostname: str | None) -> str:
    """Write the card's seed (fresh instance-id, host name, user-data) and read it back -> the instance-id."""
    cmdline = read_boot_file(target, CMDLINE)
    if cmdline is None:
        raise UserError(str(target), f"the boot partition has no {CMDLINE} for the ds=nocloud token",
                        hint="flash a Raspberry Pi OS image")
    iid = instance_id()
    try:
        files = seed_files(read_boot_file(target, SEED) or "", cmdline, seed, hostname, iid)
    except (ValueError, yaml.YAMLError) as e:
        raise UserError(str(target), f"{e}", hint=f"fix the image's {SEED} (one key: value per line)") from None
    put_boot_files(target, files)
    return iid
