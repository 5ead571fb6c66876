"""Per-card SSH host keys made at flash time (`invoke flash --host-keys`).

    plan_host_keys(image, ...)  -> the key types of the image's manifest, the host files checked
                                   (before anything is written)
    with private_dir(): put_host_keys(plan, card, name, tmp) per card
                                -> ssh-keygen on this host, in a 0700 directory removed afterwards
                                -> the keys and the committed set the card's first-boot guard keeps,
                                   written into the card's ext4 root (partition 2) with debugfs
                                -> read back: bytes, mode, owner
    record_on_host(plan, cards) -> known_hosts and SSHFP records (stages/flash/known_hosts.py)

Only public data leaves this module: the private keys live in the private directory, and in
memory for the read-back, for as long as their card takes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firstboot.entropi_firstboot import committed, sshkey
from firstboot.entropi_firstboot.config import ConfigError, check_key_types
from firstboot.entropi_firstboot.device import COMMITTED, SSH_DIR, TMP_PREFIX
from stages.core.errors import UserError
from stages.core.processes import run, text
from stages.core.runner import signals_raise
from stages.flash.device import settle
from stages.image.disk import read_mbr
from stages.image.ext4 import Ext4File, ext4_at, file_mode, list_dir, put_files, read_file
from stages.source.compression import raw_name

DEFAULT_KNOWN_HOSTS = Path("out/known_hosts")
DEFAULT_SSHFP = Path("out/sshfp.zone")
ROOT_PARTITION = 2
EXT4_MAGIC_AT = 1024 + 56  # s_magic in the superblock, from the file system's start
TOOLS = ("ssh-keygen", "debugfs")
SHM = Path("/dev/shm")  # memory, not disk: where the private directory goes when it can


@dataclass(frozen=True)
class PublicKey:
    """What is recorded of one host key: the committed set's fields (committed.KEY_FIELDS)."""

    type: str
    bits: int | None
    file: str
    public: str  # ALGORITHM BASE64
    sha256: str
    fingerprint: str  # the ssh-keygen -l line

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in committed.KEY_FIELDS}


@dataclass(frozen=True)
class HostKeys:
    """--host-keys: the key types to make, and where the host's records of them go."""

    key_types: tuple[tuple[str, int | None], ...]
    known_hosts: Path
    sshfp: Path
    tmp_root: Path | None = None  # where the private directory is made (None: /dev/shm or $TMPDIR)


def manifest_path(image: Path) -> Path:
    """out/NAME.manifest.json for out/NAME.img (also .img.xz, .img.zst)."""
    return image.with_name(raw_name(image.name).removesuffix(".img") + ".manifest.json")


def plan_host_keys(image: Path, *, known_hosts: Path | None = None, sshfp: Path | None = None,
                   tmp_root: Path | None = None) -> HostKeys:
    """Everything --host-keys needs, checked before any card is written."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise UserError("flash", f"--host-keys needs {tool}, which is not installed",
                            hint="install openssh-client and e2fsprogs (./ci/setup)")
    return HostKeys(key_types(image), output_file(known_hosts, DEFAULT_KNOWN_HOSTS, "--known-hosts"),
                    output_file(sshfp, DEFAULT_SSHFP, "--sshfp"), tmp_root)


def key_types(image: Path) -> tuple[tuple[str, int | None], ...]:
    """The key types and sizes the image's first-boot guard expects, from the build's manifest."""
    path = manifest_path(image)
    hint = f"flash an image built by entropi with its manifest beside it ({path.name}), or drop --host-keys"
    try:
        manifest = json.loads(path.read_text())
        types = manifest["firstboot"]["settings"]["key_types"]
    except FileNotFoundError:
        raise UserError(str(image), f"has no manifest {path}, so the key types its first boot expects are "
                        "unknown", hint=hint) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(str(path), f"does not record firstboot.settings.key_types ({type(e).__name__}: {e})",
                        hint=hint) from None
    try:
        return tuple((k["type"], k["bits"]) for k in check_key_types(types, ""))
    except ConfigError as e:
        raise UserError(str(path), f"firstboot.settings.key_types: {e}", hint=hint) from None


def output_file(path: Path | None, default: Path, option: str) -> Path:
    """A file this host writes (replaced atomically): its directory must exist (out/ is made)."""
    if path is None:
        default.parent.mkdir(parents=True, exist_ok=True)
        path = default
    hint = f"give {option} a file in an existing directory"
    if path.exists() and not path.is_file():
        raise UserError(str(path), f"{option}: not a regular file", hint=hint)
    if not path.parent.is_dir():
        raise UserError(str(path), f"{option}: directory {path.parent} does not exist", hint=hint)
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise UserError(str(path), f"{option}: cannot be written here", hint=hint)
    return path


def need_names(names: Sequence[str | None]) -> list[str]:
    """Every card needs a host name: its keys go into known_hosts under it."""
    if any(name is None for name in names):
        raise UserError("flash", "--host-keys needs a host name per card (known_hosts lists keys under it)",
                        hint="add --hostname NAME (several cards: a pattern such as pi-{n:02}, or a list)")
    return [name for name in names if name is not None]


@contextmanager
def private_dir(root: Path | None = None) -> Iterator[Path]:
    """A directory only root can enter (0700), on /dev/shm when it can; removed afterwards, also after a
    failure, Ctrl-C or SIGTERM (which, in the main thread, raise here instead of ending the process)."""
    base = root if root is not None else (SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None)
    main = threading.current_thread() is threading.main_thread()
    with signals_raise() if main else nullcontext():
        path = Path(tempfile.mkdtemp(prefix="entropi-hostkeys-", dir=base))
        try:
            path.chmod(0o700)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def make_keys(plan: HostKeys, hostname: str, workdir: Path) -> tuple[list[PublicKey], list[Ext4File]]:
    """The card's keys, made with ssh-keygen in a directory of its own under ``workdir``."""
    made: list[PublicKey] = []
    files: list[Ext4File] = []
    where = Path(tempfile.mkdtemp(prefix=f"{hostname}-", dir=workdir))
    for ktype, bits in plan.key_types:
        name = f"ssh_host_{ktype}_key"
        private = where / name
        run(["ssh-keygen", "-q", "-N", "", "-t", ktype, *(["-b", str(bits)] if bits else []),
             "-C", f"root@{hostname}", "-f", str(private)])
        line = Path(f"{private}.pub").read_text()
        algorithm, blob = sshkey.parse_public(line)
        made.append(PublicKey(ktype, bits, f"{SSH_DIR}/{name}", f"{algorithm} {line.split()[1]}",
                              sshkey.fingerprint(blob), text(["ssh-keygen", "-l", "-E", "sha256", "-f", str(private)])))
        files += [Ext4File(f"{SSH_DIR}/{name}", private, 0o600), Ext4File(f"{SSH_DIR}/{name}.pub",
                                                                          Path(f"{private}.pub"), 0o644)]
    record = where / "committed.json"
    made_by = {"by": "entropi flash", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "crng_ready_before_keys": host_crng_ready()}
    record.write_text(json.dumps(committed.flash_record([k.fields() for k in made], made_by), indent=2,
                                 sort_keys=True) + "\n")
    return made, [*files, Ext4File(COMMITTED, record, 0o644)]


def host_crng_ready() -> bool:
    """This host's kernel generator is initialised (getrandom does not block): the keys are not weak."""
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
    except BlockingIOError:
        raise UserError("flash", "this host's kernel random generator is not initialised yet",
                        hint="wait a minute after boot (or start rngd/haveged), then flash again") from None
    return True


def root_fs(target: Path) -> str:
    """The card's root file system (partition 2, ext4), as debugfs names it."""
    part = next((p for p in read_mbr(target).partitions if p.number == ROOT_PARTITION), None)
    with open(target, "rb") as f:
        f.seek((part.start if part else 0) + EXT4_MAGIC_AT)
        magic = f.read(2)
    if part is None or magic != b"\x53\xef":
        raise UserError(str(target), "partition 2 is not an ext4 root file system, so --host-keys has nowhere "
                        "to put the keys", hint="flash a Raspberry Pi OS image, or drop --host-keys")
    return ext4_at(target, part.start)


def put_host_keys(plan: HostKeys, target: Path, hostname: str, workdir: Path) -> tuple[PublicKey, ...]:
    """Make the card's keys, write them and their committed set onto ``target``, read them back."""
    fs = root_fs(target)
    keys, files = make_keys(plan, hostname, workdir)
    ours = {f.path for f in files}
    stale = [f"{SSH_DIR}/{n}" for n in list_dir(fs, SSH_DIR)
             if n.startswith(("ssh_host_", TMP_PREFIX)) and f"{SSH_DIR}/{n}" not in ours]
    put_files(fs, files, remove=stale)
    settle(target)
    verify_files(target, fs, files)
    return tuple(keys)


def verify_files(target: Path, fs: str, files: Sequence[Ext4File]) -> None:
    """Each file reads back from the card as written: bytes, regular file, mode, owner root; no stray key."""
    for f in files:
        if read_file(fs, f.path) != f.source.read_bytes():
            raise UserError(str(target), f"{f.path} does not read back as written on partition 2",
                            hint="the card may be failing")
        if (got := file_mode(fs, f.path)) != (0o100000 | f.mode, 0, 0):
            raise UserError(str(target), f"{f.path} reads back with mode/owner {got}, not {f.mode:04o} root",
                            hint="the card may be failing")
    wanted = sorted(Path(f.path).name for f in files if f.path.startswith(SSH_DIR + "/"))
    found = sorted(n for n in list_dir(fs, SSH_DIR) if n.startswith(("ssh_host_", TMP_PREFIX)))
    if found != wanted:
        raise UserError(str(target), f"{SSH_DIR} holds {found}, not the keys written {wanted}",
                        hint="the card may be failing")
