"""The device: where the program's files live, and readings of the kernel's generator."""

from __future__ import annotations

import errno
import glob
import os
import re
from typing import Any, Dict, Optional, Tuple

from . import seams

COMMITTED = "/var/lib/entropi/committed.json"  # the host keys entropi made and published
EVIDENCE_LOG = "/var/log/entropi/firstboot-evidence.json"
SSH_DIR = "/etc/ssh"
TMP_PREFIX = ".entropi-"
# Since Linux 5.18 the input pool is 256 bits and entropy_avail reaches 256 exactly when the
# crng becomes ready; before, it was 4096 bits and the level was a separate question.
NEW_POOL_BITS = 256


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def read_int(path: str) -> Optional[int]:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


class Machine:
    """Paths of the device (or of a test tree) and readings of its state."""

    def __init__(self, root: str, proc: str, sys_dir: str, boot_dir: str) -> None:
        self.root = root
        self.proc = proc
        self.sys = sys_dir
        self.boot_dir = self.path(boot_dir)

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    @property
    def is_live(self) -> bool:
        return os.path.realpath(self.root) == "/"

    def crng_ready(self) -> Optional[bool]:
        """True/False from getrandom(GRND_NONBLOCK); None if the kernel has no getrandom."""
        try:
            seams.getrandom(1, getattr(os, "GRND_NONBLOCK", 1))
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return False
            if exc.errno == errno.ENOSYS:
                return None
            raise
        except AttributeError:  # no os.getrandom at all
            return None
        return True

    def entropy(self) -> Tuple[Optional[int], Optional[int]]:
        base = os.path.join(self.proc, "sys", "kernel", "random")
        return read_int(os.path.join(base, "entropy_avail")), read_int(os.path.join(base, "poolsize"))

    def hwrng(self) -> Dict[str, Any]:
        base = os.path.join(self.sys, "class", "misc", "hw_random")
        available_text = read_text(os.path.join(base, "rng_available"))
        current_text = read_text(os.path.join(base, "rng_current"))
        available = (available_text or "").split()
        current = (current_text or "").strip() or None
        if current == "none":
            current = None
        return {
            "present": bool(available) or current is not None,
            "available": available,
            "current": current,
            "sysfs": os.path.isdir(base),
        }

    def rngd_running(self) -> bool:
        for comm in glob.glob(os.path.join(self.proc, "[0-9]*", "comm")):
            if (read_text(comm) or "").strip() == "rngd":
                return True
        return False

    def uptime(self) -> Optional[float]:
        text = read_text(os.path.join(self.proc, "uptime"))
        try:
            return float((text or "").split()[0])
        except (IndexError, ValueError):
            return None

    def kernel(self) -> Optional[str]:
        text = read_text(os.path.join(self.proc, "sys", "kernel", "osrelease"))
        return text.strip() if text is not None else None

    def snapshot(self, full: bool = True) -> Dict[str, Any]:
        """The kernel's view of its generator; ``full`` adds whether rngd runs (a walk of
        /proc, left out of the guard's quick path)."""
        avail, poolsize = self.entropy()
        view = {
            "monotonic": round(seams.monotonic(), 3),
            "uptime": self.uptime(),
            "crng_ready": self.crng_ready(),
            "entropy_avail": avail,
            "poolsize": poolsize,
        }
        if full:
            view["rngd_running"] = self.rngd_running()
        return view

    def guard_view(self) -> Optional[Dict[str, Any]]:
        """The kernel's view when entropi-guard started (its ENTROPI_GUARD_START: uptime,
        entropy_avail, poolsize), on the monotonic clock; None without it or on a kernel with
        the old 4096-bit pool (there the program's own look is as good: its interpreter's
        start does not make the kernel ready)."""
        fields = os.environ.get("ENTROPI_GUARD_START", "").split()
        now_up = self.uptime()
        try:
            up, avail, poolsize = float(fields[0]), int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            return None
        if poolsize != NEW_POOL_BITS or now_up is None or not 0 <= now_up - up < 3600:
            return None
        return {"monotonic": round(seams.monotonic() - (now_up - up), 3), "uptime": up,
                "crng_ready": avail >= NEW_POOL_BITS, "entropy_avail": avail, "poolsize": poolsize,
                "seen_by": "entropi-guard"}

    def mount(self, path: str) -> Optional[Tuple[str, bool]]:
        """(file system type, read-only) of the file system mounted exactly at ``path``,
        from /proc/self/mountinfo; None when nothing is mounted there (an unmounted boot
        partition leaves an empty directory on the root file system, which isdir accepts)."""
        text = read_text(os.path.join(self.proc, "self", "mountinfo"))
        if text is None:  # no procfs: the directory test of os.path.ismount
            return ("unknown", False) if os.path.ismount(path) else None
        found = _mounted_at(text, os.path.realpath(path))
        if found is not None and found[0] == "autofs":  # an automount: touching it mounts it
            try:
                os.listdir(path)
            except OSError:
                return found
            found = _mounted_at(read_text(os.path.join(self.proc, "self", "mountinfo")) or "",
                                os.path.realpath(path)) or found
        return found

    def key_paths(self, ktype: str) -> Tuple[str, str]:
        """The private and public host key of ``ktype``."""
        private = self.path("%s/ssh_host_%s_key" % (SSH_DIR, ktype))
        return private, private + ".pub"


def _unescape(field: str) -> str:
    """mountinfo writes a space as \\040, a tab as \\011, a backslash as \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounted_at(mountinfo: str, point: str) -> Optional[Tuple[str, bool]]:
    """The last (topmost) mount at ``point``: (fstype, read-only)."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:] or len(fields) < 10 or _unescape(fields[4]) != point:
            continue
        sep = fields.index("-", 6)
        options = fields[5].split(",") + (fields[sep + 3].split(",") if len(fields) > sep + 3 else [])
        found = (fields[sep + 1], "ro" in options)
    return found
