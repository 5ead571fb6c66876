"""Device-mapper through its ioctls (linux/dm-ioctl.h), for the power-cut test's guest side.

The replay makes and removes a snapshot and two partitions at every point of the log; dmsetup
costs a process and a wait for udev each time (about a second per point under TCG), the
ioctls a millisecond. The guest side stops udev first, so nothing else opens these devices;
their nodes are made here (mknod) under NODES, named as the devices.

Standard library only: it runs in the libguestfs appliance on the host's python3.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

NODES = "/tmp/powercut/dev"
DM_CONTROL = "/dev/mapper/control"
HEADER = struct.Struct("=3I7I Q128s129s7x")  # struct dm_ioctl: 312 bytes
TARGET = struct.Struct("=QQiI16s")  # struct dm_target_spec: 40 bytes, then the parameters
VERSION = (4, 0, 0)
CREATE, REMOVE, SUSPEND, LOAD, MESSAGE = 3, 4, 6, 9, 14  # DM_*_CMD


def _request(command: int) -> int:
    """_IOWR(0xfd, command, struct dm_ioctl)."""
    return (3 << 30) | (HEADER.size << 16) | (0xFD << 8) | command


def _call(command: int, name: str, payload: bytes = b"", count: int = 0) -> tuple[int, ...]:
    """One ioctl on /dev/mapper/control; the answered header's fields."""
    size = HEADER.size + len(payload)
    header = HEADER.pack(*VERSION, size, HEADER.size, count, 0, 0, 0, 0, 0, name.encode(), b"")
    buffer = bytearray(header + payload)
    with open(DM_CONTROL, "rb") as control:
        fcntl.ioctl(control, _request(command), buffer)
    return HEADER.unpack_from(buffer)


def node(name: str) -> str:
    return os.path.join(NODES, name)


def create(name: str, table: list[tuple[int, int, str, str]]) -> str:
    """A device NAME with ``table`` (start, length, target, parameters) in force; its node."""
    fields = _call(CREATE, name)
    dev = fields[10]
    try:
        load(name, table)
    except OSError:
        remove(name)
        raise
    os.makedirs(NODES, exist_ok=True)
    if os.path.exists(node(name)):
        os.unlink(node(name))
    os.mknod(node(name), stat.S_IFBLK | 0o600, dev)
    return f"{os.major(dev)}:{os.minor(dev)}"


def load(name: str, table: list[tuple[int, int, str, str]]) -> None:
    """Load ``table`` into NAME and resume it (the new table is then in force)."""
    specs = b""
    for start, length, target, params in table:
        text = params.encode() + b"\0"
        text += b"\0" * (-(TARGET.size + len(text)) % 8)
        specs += TARGET.pack(start, length, 0, TARGET.size + len(text), target.encode()) + text
    _call(LOAD, name, specs, count=len(table))
    _call(SUSPEND, name)  # without DM_SUSPEND_FLAG: resume


def remove(*names: str) -> None:
    for name in names:
        _call(REMOVE, name)
        if os.path.exists(node(name)):
            os.unlink(node(name))


def message(name: str, text: str) -> None:
    """A target message (``mark LABEL`` for log-writes) to sector 0 of NAME."""
    _call(MESSAGE, name, struct.pack("=Q", 0) + text.encode() + b"\0")
