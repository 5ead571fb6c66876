"""The power-cut test's host side (tests/integration/test_power_cut.py): the disks, one
libguestfs appliance, the guest side's two commands per case (tests/support/powercut_guest.py:
``run``, then ``replay``), and the judgement of what it observed.

The disks, each also /dev/disk/guestfs/LABEL in the appliance (with this many drives the
kernel's sdX order is not the order they were added in):

- ``tools`` (read-only ext4, made with mke2fs -d): the host's python3 and its standard library
  (the appliance has no Python), the first-boot program as installed (launcher + package) and
  the guest side's modules;
- ``cow``: the copy-on-write store of the snapshot each observation mounts;
- per case (a, b, c, ...): the card's boot partition (FAT32) and root (ext4) as the first boot
  finds them, the dm-log-writes log, and the replay's copies of the two partitions; the
  partitions are qcow2 overlays of one pair of images made here (mkfs.vfat, mke2fs -d).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.image.guest import open_guest
from tests.conftest import ROOT

FIRSTBOOT = ROOT / "firstboot"
GUEST_SIDE = Path(__file__).with_name("powercut_guest.py")
GUEST_MODULES = (GUEST_SIDE, GUEST_SIDE.with_name("powercut_dm.py"), GUEST_SIDE.with_name("powercut_checks.py"))
MIB = 1 << 20
BOOT_MIB, ROOT_MIB = 64, 64
KEY_TYPES = [{"type": "ed25519"}, {"type": "ecdsa", "bits": 256}]
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data",
               "distutils", "site-packages", "dist-packages", "config-*", "__pycache__")
TOOLS_MOUNT = "/sysroot"  # where libguestfs mounts "/" in the appliance
LABELLED = "/dev/disk/guestfs/"
PER_CASE = ("boot", "root", "log", "replayboot", "replayroot")
LOG_FLUSH, LOG_FUA = 1, 2


@dataclass
class PowerCut:
    """One case: the program's run on the logged card (as it is, or with fsyncs removed), and
    what the card holds after a power cut at each point of the log."""

    removed: str  # "": the program as it is; "all" or "files": those fsyncs are no-ops
    run: dict[str, Any]
    points: list[dict[str, Any]]

    def verdict(self) -> dict[str, Any]:
        lines = [line for line in self.run["stdout"].splitlines() if line.startswith("ENTROPI-FIRSTBOOT ")]
        assert len(lines) == 1, f"exit {self.run['exit']}: {self.run['stdout']}{self.run['stderr']}"
        result: dict[str, Any] = json.loads(lines[0].split(" ", 1)[1])
        return result

    def point(self, mark: str) -> dict[str, Any]:
        return next(point for point in self.points if point["mark"] == mark)

    def violations(self) -> list[str]:
        """Every broken invariant, one line each: a cut that leaves the card unsound (the
        guest side's checks), and the cut right after the run, which must find the set the
        run reported committed and everything the run wrote (the card as the later sync
        leaves it: nothing was still only in the cache)."""
        found = [f"cut at log entry {point['entry']} ({where(point)}), after {point['after']}: {problem}"
                 for point in self.points for problem in point["problems"]]
        ended, synced = self.point("exit"), self.point("synced")
        reported = self.verdict()["fingerprints"]
        if ended["committed"] != reported:
            found.append(f"cut right after the run ended, which reported {len(reported)} keys committed: "
                         f"committed {ended['committed']}")
        missing = sorted(path for path in ended["tree"].keys() | synced["tree"].keys()
                         if ended["tree"].get(path) != synced["tree"].get(path))
        if missing:
            found.append(f"cut right after the run ended: not yet on the card as written: {', '.join(missing)}")
        return found


def where(point: dict[str, Any]) -> str:
    if point["mark"]:
        return f"mark {point['mark']}"
    return "flush" if point["flags"] & LOG_FLUSH else "FUA write"


def mkfs_ext4(image: Path, tree: Path, mib: int) -> None:
    """An ext4 file system holding ``tree``; inode tables and journal zeroed now, so the
    kernel starts no lazy-init writes of its own while the test runs."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), "-E",
                    "lazy_itable_init=0,lazy_journal_init=0", str(image), f"{mib}M"],
                   check=True, capture_output=True)


def python_runtime(into: Path) -> str:
    """The host's python3 and its standard library under ``into`` (bin/, lib/pythonX.Y/),
    where that interpreter finds them; returns the interpreter's path below ``into``."""
    executable = Path(os.path.realpath(sys.executable))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (into / "bin").mkdir(parents=True)
    shutil.copy2(executable, into / "bin" / version)
    shutil.copytree(sysconfig.get_path("stdlib"), into / "lib" / version,
                    ignore=shutil.ignore_patterns(*STDLIB_SKIP), symlinks=True)
    return f"bin/{version}"


def tools_disk(work: Path) -> tuple[Path, str]:
    """The read-only tools disk and the path of python3 on it, relative to its root."""
    tree = work / "tools-tree"
    python = "python/" + python_runtime(tree / "python")
    (tree / "firstboot").mkdir()
    shutil.copy2(FIRSTBOOT / "entropi-firstboot", tree / "firstboot")
    shutil.copytree(FIRSTBOOT / "entropi_firstboot", tree / "firstboot" / "entropi_firstboot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for module in GUEST_MODULES:
        shutil.copy2(module, tree / module.name)
    image = work / "tools.img"
    mkfs_ext4(image, tree, 96)
    return image, python


def card_root_tree(tree: Path) -> None:
    """The root file system the program finds at its first boot."""
    for name in ("etc/ssh", "etc/entropi", "boot/firmware", "var"):
        (tree / name).mkdir(parents=True)
    (tree / "etc/hostname").write_text("raspberrypi\n")
    (tree / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (tree / "etc/issue").write_text("Debian GNU/Linux 12 \\n \\l\n\n")
    config = {"key_types": KEY_TYPES, "wait_timeout": 60, "boot_dir": "/boot/firmware"}
    (tree / "etc/entropi/firstboot.json").write_text(json.dumps(config))


def card_disks(work: Path) -> tuple[Path, Path]:
    tree = work / "card-root"
    card_root_tree(tree)
    root = work / "root.img"
    mkfs_ext4(root, tree, ROOT_MIB)
    boot = work / "boot.img"
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "BOOTFS", "-C", str(boot), str(BOOT_MIB * 1024)],
                   check=True, capture_output=True)
    return boot, root


def sparse(path: Path, mib: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(mib * MIB)
    return path


def overlay(base: Path, path: Path) -> Path:
    """A qcow2 overlay of ``base``: the card's copies cost no space and no copying."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(path)],
                   check=True, capture_output=True)
    return path


def power_cuts(work: Path, cases: tuple[str, ...]) -> dict[str, PowerCut]:
    """In one appliance, for each case (which fsyncs are no-ops: "" none, "all", "files"):
    run the program on a logged card, then replay the log to every flush and FUA write."""
    tools, python = tools_disk(work)
    bases = dict(zip(("boot", "root"), card_disks(work), strict=True))
    drives = {"tools": (tools, "raw"), "cow": (sparse(work / "cow.img", 64), "raw")}
    for letter in "abcdefgh"[:len(cases)]:
        drives[f"{letter}log"] = (sparse(work / f"{letter}-log.img", 256), "raw")
        for name in ("boot", "root", "replayboot", "replayroot"):
            base = bases[name.removeprefix("replay")]
            drives[letter + name] = (overlay(base, work / f"{letter}-{name}.qcow2"), "qcow2")
    g = open_guest([(path, fmt, name == "tools") for name, (path, fmt) in drives.items()],
                   where="power-cut test", labels=list(drives))
    try:
        g.mount_ro(LABELLED + "tools", "/")
        results = {}
        for letter, removed in zip("abcdefgh", cases, strict=False):
            cfg = {"python": f"{TOOLS_MOUNT}/{python}", "launcher": f"{TOOLS_MOUNT}/firstboot/entropi-firstboot",
                   "remove_fsync": removed, "boot_sectors": BOOT_MIB * MIB // 512,
                   "root_sectors": ROOT_MIB * MIB // 512, "cow": LABELLED + "cow",
                   **{name: LABELLED + letter + name for name in PER_CASE}}
            ran = guest_side(g, cfg, "run")
            results[removed] = PowerCut(removed, ran, guest_side(g, cfg, "replay")["points"])
        return results
    finally:
        g.close()


def guest_side(g: Any, cfg: dict[str, Any], command: str) -> dict[str, Any]:
    """One command of the guest side, run by the appliance's shell (``debug sh``: the bindings'
    way to run a program in the appliance itself, outside the mounted disk); its JSON answer."""
    argv = [cfg["python"], "-IS", f"{TOOLS_MOUNT}/{GUEST_SIDE.name}", command, json.dumps(cfg)]
    out = g.debug("sh", [" ".join(shlex.quote(arg) for arg in argv)])
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
