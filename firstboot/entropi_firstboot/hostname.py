"""The per-card host name from <boot_dir>/entropi/hostname: /etc/hostname, /etc/hosts, the kernel."""

from __future__ import annotations

import os
import re
import socket
from typing import Optional

from . import log
from .device import read_text
from .run import Run

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def valid_hostname(name: str) -> bool:
    """RFC 1123 host name: dot-separated labels of letters, digits and hyphens."""
    if not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def _boot_partition_name(run: Run) -> Optional[str]:
    """The valid name in <boot_dir>/entropi/hostname, or None (a warning if it is invalid)."""
    if run.boot_entropi is None:  # not mounted: an old copy on the root file system is no answer
        return None
    text = read_text(os.path.join(run.boot_entropi, "hostname"))
    if text is None:
        return None
    lines = text.strip().splitlines()
    candidate = lines[0].strip() if lines else ""
    if len(lines) <= 1 and valid_hostname(candidate):
        return candidate
    run.warn("ignoring %s/entropi/hostname: %r is not a valid RFC 1123 host name"
             % (run.config["boot_dir"], text.strip()[:80]))
    return None


def apply_hostname(run: Run) -> None:
    machine = run.machine
    etc_hostname = machine.path("/etc/hostname")
    current = (read_text(etc_hostname) or "").strip().split("\n")[0].strip()
    wanted = _boot_partition_name(run)
    if wanted is None:
        if current and valid_hostname(current):
            run.hostname, run.hostname_source = current, "/etc/hostname"
        elif machine.is_live:
            run.hostname, run.hostname_source = socket.gethostname(), "kernel"
        return
    run.hostname, run.hostname_source = wanted, "boot-partition"
    if current != wanted:
        run.ops.write_atomic(etc_hostname, wanted + "\n")
    _fix_hosts(run, wanted)
    if machine.is_live and socket.gethostname() != wanted:
        try:
            socket.sethostname(wanted)  # the system call hostname(1) would make
        except OSError as exc:
            run.warn("could not set the running host name: %s" % exc)
    log("host name set to %s" % wanted)


def _fix_hosts(run: Run, name: str) -> None:
    path = run.machine.path("/etc/hosts")
    text = read_text(path)
    names = name if "." not in name else "%s %s" % (name, name.split(".")[0])
    wanted_line = "127.0.1.1\t" + names
    if text is None:
        lines = ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback"]
    else:
        lines = text.splitlines()
    out = []
    replaced = False
    for line in lines:
        fields = line.split()
        if fields and fields[0] == "127.0.1.1":
            if not replaced:
                out.append(wanted_line)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(wanted_line)
    new = "\n".join(out) + "\n"
    if new != text:
        run.ops.write_atomic(path, new)
