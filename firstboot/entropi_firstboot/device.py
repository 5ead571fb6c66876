"""The device: where the program's files live, and readings of the kernel's generator."""

from __future__ import annotations

import errno
import glob
import os
from typing import Any, Dict, Optional, Tuple

from . import seams

DONE_MARKER = "/var/lib/entropi/firstboot.done"
STARTED_MARKER = "/var/lib/entropi/firstboot.started"
UNREADY_FLAG = "/var/lib/entropi/firstboot.keys-made-after-timeout"
EVIDENCE_LOG = "/var/log/entropi/firstboot-evidence.json"
SSH_DIR = "/etc/ssh"
TMP_PREFIX = ".entropi-"


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

    def snapshot(self) -> Dict[str, Any]:
        avail, poolsize = self.entropy()
        return {
            "monotonic": round(seams.monotonic(), 3),
            "uptime": self.uptime(),
            "crng_ready": self.crng_ready(),
            "entropy_avail": avail,
            "poolsize": poolsize,
            "rngd_running": self.rngd_running(),
        }

    def key_paths(self, ktype: str) -> Tuple[str, str]:
        """The private and public host key of ``ktype``."""
        private = self.path("%s/ssh_host_%s_key" % (SSH_DIR, ktype))
        return private, private + ".pub"
