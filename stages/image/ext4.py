"""An ext4 file system: its size, the smallest size resize2fs can shrink it to, and files written
into it and read back with debugfs, without mounting it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stages.core.errors import UserError
from stages.core.processes import run, text


def fs_geometry(device: str) -> tuple[int, int]:
    """(block count, block size) of the ext4 file system on ``device``."""
    head = text(["dumpe2fs", "-h", device])
    fields = dict(re.findall(r"^(Block count|Block size):\s+(\d+)$", head, re.M))
    return int(fields["Block count"]), int(fields["Block size"])


def minimum_blocks(device: str) -> int:
    out = text(["resize2fs", "-P", device])
    m = re.search(r"minimum size of the filesystem:\s*(\d+)", out)
    if not m:
        raise UserError(device, f"resize2fs -P gave no minimum size: {out.strip()!r}", hint="run e2fsck -f on it")
    return int(m.group(1))


# --- files in an ext4 file system, written and read with e2fsprogs' debugfs, no mount ---------------

DEBUGFS = "debugfs"


@dataclass(frozen=True)
class Ext4File:
    """A file to put into the file system: its absolute path there, a host file with its bytes, its mode.
    The owner is always root (uid and gid 0)."""

    path: str
    source: Path
    mode: int


def ext4_at(disk: Path, offset: int) -> str:
    """How e2fsprogs names the file system at byte ``offset`` of a disk (a partition without a device)."""
    return f"{disk}?offset={offset}"


def _quoted(path: str | Path) -> str:
    text = str(path)
    if any(c in text for c in '"\n\\'):
        raise ValueError(f"debugfs cannot name {text!r}")
    return f'"{text}"'


def debugfs(fs: str, commands: Sequence[str], *, write: bool = False) -> bytes:
    """Run debugfs commands on ``fs`` -> stdout (one command: its output alone; several: each after
    its echo). debugfs exits 0 even when a command fails: callers read back what they changed."""
    how = ["-R", commands[0]] if len(commands) == 1 else ["-f", "-"]
    script = None if len(commands) == 1 else "\n".join(commands).encode() + b"\n"
    return run([DEBUGFS, *(["-w"] if write else []), *how, fs], input=script,
               hint="is partition 2 an ext4 file system, and is the card whole?").stdout


def put_files(fs: str, files: Sequence[Ext4File], *, remove: Sequence[str] = ()) -> None:
    """Remove ``remove``, then write each file (its parent directories made as needed) owned by root."""
    dirs = sorted({str(PurePosixPath(f.path).parent) for f in files})
    parents = sorted({str(p) for d in dirs for p in [PurePosixPath(d), *PurePosixPath(d).parents] if str(p) != "/"})
    commands = [f"mkdir {_quoted(d)}" for d in sorted(parents, key=len)]
    commands += [f"rm {_quoted(p)}" for p in [*remove, *(f.path for f in files)]]
    for f in files:
        commands += [f"write {_quoted(f.source)} {_quoted(f.path)}",
                     f"sif {_quoted(f.path)} mode 0{0o100000 | f.mode:o}",
                     f"sif {_quoted(f.path)} uid 0", f"sif {_quoted(f.path)} gid 0"]
    debugfs(fs, commands, write=True)


def list_dir(fs: str, path: str) -> list[str]:
    """The names in directory ``path`` (none when it does not exist)."""
    out = debugfs(fs, [f"ls -p {_quoted(path)}"]).decode(errors="replace")
    names = [fields[5] for line in out.splitlines() if len(fields := line.split("/")) >= 7]
    return [name for name in names if name not in (".", "..")]


def read_file(fs: str, path: str) -> bytes:
    """The bytes of ``path`` (empty when it does not exist: debugfs says so on stderr only)."""
    return debugfs(fs, [f"cat {_quoted(path)}"])


def file_mode(fs: str, path: str) -> tuple[int, int, int] | None:
    """(mode with the file type bits, uid, gid) of ``path``; None when it does not exist."""
    out = debugfs(fs, [f"stat {_quoted(path)}"]).decode(errors="replace")
    mode = re.search(r"Type: regular\s+Mode:\s+(\d+)", out)
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", out)
    if not mode or not owner:
        return None
    return 0o100000 | int(mode[1], 8), int(owner[1]), int(owner[2])
