"""The power-cut test's side INSIDE the libguestfs appliance (tests/integration/test_power_cut.py).

Standard library only: it runs on the host's python3, copied onto the tools disk with the
first-boot program (tests/support/powercut.py), because the appliance has no Python.

``run``: the card (boot partition FAT32, root ext4, as on a Pi's one SD card) is one device
under dm-log-writes, which logs every write the device completes and every flush, in order.
The first-boot program runs on it as the unit runs it (python3 -IS, the launcher as installed;
a wrapper only adds a mark to the log after each file operation, and in the negative controls
makes fsyncs no-ops); after it exits, a mark ``exit`` goes into the log, then a ``sync`` (the
writeback the kernel would do later) and a mark ``synced``. Background writeback and the ext4
journal's timer are off, so every flush in the log comes from the program or from that sync:
the log has the same shape at every run.

``replay``: the log is replayed onto a copy of the card as it was before the run. At every
flush or FUA write, and at each mark, the card is what a power cut at that instant leaves
(writes not flushed are lost). That state is mounted (ext4 replays its journal into a
throw-away dm snapshot) as the next boot would, and observed: the committed set, and what is
wrong with the files (powercut_checks.py). The host side judges the observations.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(TOOLS, "firstboot"), TOOLS]
import powercut_dm as dm  # noqa: E402
from powercut_checks import BOOT_DIR, inspect  # noqa: E402

LOG_FLUSH, LOG_FUA, LOG_DISCARD, LOG_MARK = 1, 2, 4, 8
LOG_MAGIC = 0x6A736677736872
RUN_MOUNT = "/tmp/powercut/card"
CRASH_MOUNT = "/tmp/powercut/crash"
NO_WRITEBACK = {"vm/dirty_writeback_centisecs": "0", "vm/dirty_expire_centisecs": "360000"}


def sh(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def partitions(prefix: str, card: str, cfg: dict) -> None:
    """The card's two partitions (PREFIX-boot, PREFIX-root) on ``card``, as its partition table."""
    b, r = cfg["boot_sectors"], cfg["root_sectors"]
    dm.create(prefix + "-boot", [(0, b, "linear", card + " 0")])
    dm.create(prefix + "-root", [(0, r, "linear", f"{card} {b}")])


def joined(name: str, boot_disk: str, root_disk: str, cfg: dict) -> str:
    """One card from two disks: the boot partition's sectors, then the root's (one SD card)."""
    b, r = cfg["boot_sectors"], cfg["root_sectors"]
    return dm.create(name, [(0, b, "linear", boot_disk + " 0"), (b, r, "linear", root_disk + " 0")])


LIBC = ctypes.CDLL(None, use_errno=True)
MS_NOATIME = 1024


def mount(source: str, target: str, fstype: str, options: str) -> None:
    """mount(2) itself: the replay mounts the card at every point."""
    if LIBC.mount(source.encode(), target.encode(), fstype.encode(), MS_NOATIME, options.encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def mount_card(prefix: str, where: str) -> None:
    os.makedirs(where, exist_ok=True)
    # commit=: the journal's timer never fires during a test; only fsync and sync commit.
    mount(dm.node(prefix + "-root"), where, "ext4", "commit=3600,noinit_itable")
    mount(dm.node(prefix + "-boot"), os.path.join(where, BOOT_DIR), "vfat", "")


def unmount_card(where: str) -> None:
    for point in (os.path.join(where, BOOT_DIR), where):
        if os.path.ismount(point) and LIBC.umount2(point.encode(), 0) != 0:
            raise OSError(ctypes.get_errno(), "umount " + point)


def quiet_appliance() -> None:
    """No udev (nothing else opens the test's devices), no background writeback (every
    flush in the log comes from the program or the test's sync), and a root user for
    ssh-keygen, which asks who uid 0 is."""
    subprocess.run(["udevadm", "control", "--exit"], capture_output=True)  # refused: none runs
    try:
        sh("modprobe", "-a", "dm-log-writes", "dm-snapshot", "vfat", "ext4")
    except RuntimeError as exc:  # the appliance boots the host's kernel, with its modules
        raise RuntimeError(f"{exc} (the host kernel's modules must include these; on Ubuntu "
                           "dm-log-writes may be in linux-modules-extra-VERSION)") from None
    for name, value in NO_WRITEBACK.items():
        with open("/proc/sys/" + name, "w") as handle:
            handle.write(value)
    with open("/etc/passwd", "a+") as passwd:
        passwd.seek(0)
        if not any(line.startswith("root:") for line in passwd):
            passwd.write("root:x:0:0:root:/root:/bin/sh\n")


# The launcher as installed, run with python3 -IS -c WRAPPER LAUNCHER ARGS. The wrapper adds a
# mark to the log after each file operation (FileOps.tick: the count and what was done), so
# each point of the replay says after which operation the power was cut; marks flush nothing.
MARK_OPERATIONS = """
import os, sys
tools = os.path.dirname(os.path.dirname(sys.argv[1]))
sys.path[:0] = [os.path.join(tools, "firstboot"), tools]
import powercut_dm
from entropi_firstboot.fileops import FileOps
tick = FileOps.tick
def marked(self, what):
    tick(self, what)
    powercut_dm.message("pc-log", "mark op%d:%s" % (self.count, what.replace(" -> ", ">").replace(" ", "_")))
FileOps.tick = marked
"""
# The negative controls: os.fsync (the program's only flush) a no-op for every descriptor
# ("all"), or only for regular files ("files": the directories' fsyncs stay).
REMOVE_FSYNC = {
    "": "",
    "all": "os.fsync = lambda fd: None\n",
    "files": "import stat\nkeep = os.fsync\n"
             "os.fsync = lambda fd: keep(fd) if stat.S_ISDIR(os.fstat(fd).st_mode) else None\n",
}
RUN_LAUNCHER = "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"


def run(cfg: dict) -> dict:
    """Make the log: the program's run on the card under dm-log-writes."""
    quiet_appliance()
    card = joined("pc-card", cfg["boot"], cfg["root"], cfg)
    size = cfg["boot_sectors"] + cfg["root_sectors"]
    partitions("pc-run", dm.create("pc-log", [(0, size, "log-writes", f"{card} {cfg['log']}")]), cfg)
    mount_card("pc-run", RUN_MOUNT)
    wrapper = MARK_OPERATIONS + REMOVE_FSYNC[cfg["remove_fsync"]] + RUN_LAUNCHER
    result = subprocess.run([cfg["python"], "-IS", "-c", wrapper, cfg["launcher"], "--root", RUN_MOUNT],
                            capture_output=True, text=True, timeout=900)
    dm.message("pc-log", "mark exit")
    sh("sync")
    dm.message("pc-log", "mark synced")
    unmount_card(RUN_MOUNT)
    dm.remove("pc-run-boot", "pc-run-root", "pc-log", "pc-card")
    return {"exit": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


def log_entries(handle):
    """(flags, byte offset, data or mark text) of every entry of a dm-log-writes log, in
    order (the format: linux/drivers/md/dm-log-writes.c)."""
    magic, version, count, sectorsize = struct.unpack("<QQQI", handle.read(28))
    if magic != LOG_MAGIC or version != 1:
        raise RuntimeError("no dm-log-writes log")
    position = sectorsize
    for _ in range(count):
        handle.seek(position)
        header = handle.read(sectorsize)
        sector, sectors, flags, data_len = struct.unpack("<QQQQ", header[:32])
        position += sectorsize
        if flags & LOG_MARK:
            yield flags, 0, header[32:32 + data_len].decode()
        elif flags & LOG_DISCARD:  # never issued here (no discard mount option); read as zeros
            yield flags, sector * sectorsize, bytes(sectors * sectorsize)
        else:
            yield flags, sector * sectorsize, handle.read(sectors * sectorsize)
            position += sectors * sectorsize


def replay(cfg: dict) -> dict:
    """Replay the log onto the card's copy, up to the mark ``synced``; observe the card at every
    flush and every FUA write (what the device has promised to keep) and at the marks."""
    card = joined("pc-replay", cfg["replayboot"], cfg["replayroot"], cfg)
    sh("blockdev", "--flushbufs", cfg["log"])  # read what log-writes wrote, not a cached page
    points, observed, changed, after = [], {}, True, "nothing"
    with open(cfg["log"], "rb") as log, open(dm.node("pc-replay"), "r+b", buffering=0) as target:
        for index, (flags, offset, data) in enumerate(log_entries(log)):
            mark = data if flags & LOG_MARK else None
            if mark and mark.startswith("op"):
                after = mark.replace(RUN_MOUNT, "")
                continue
            if not mark and data:
                target.seek(offset)
                target.write(data)
                changed = True
            if not (flags & (LOG_FLUSH | LOG_FUA) or mark in ("exit", "synced")):
                continue
            if changed:
                os.fsync(target.fileno())  # the snapshot reads the device, not this file's cache
                observed, changed = observe(card, cfg), False
            points.append({"entry": index, "flags": flags, "after": after, "mark": mark, **observed})
            if mark == "synced":
                break
    dm.remove("pc-replay")
    return {"points": points}


def observe(card: str, cfg: dict) -> dict:
    """Mount the card as a power cut at this point leaves it (on a snapshot) and inspect it."""
    size = cfg["boot_sectors"] + cfg["root_sectors"]
    snap = dm.create("pc-snap", [(0, size, "snapshot", f"{card} {cfg['cow']} N 8")])
    partitions("pc-crash", snap, cfg)
    try:
        mount_card("pc-crash", CRASH_MOUNT)
        return inspect(CRASH_MOUNT)
    except OSError as exc:
        return {"committed": None, "problems": [f"the card does not mount: {exc}"], "tree": {}}
    finally:
        unmount_card(CRASH_MOUNT)
        dm.remove("pc-crash-boot", "pc-crash-root", "pc-snap")


def main(argv: list[str]) -> int:
    """``run CONFIG`` or ``replay CONFIG`` (CONFIG: JSON); the answer is one JSON line."""
    command, cfg = argv[0], json.loads(argv[1])
    started = time.monotonic()
    result = run(cfg) if command == "run" else replay(cfg)
    result["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
