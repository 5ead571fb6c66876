"""entropi-firstboot: the guard of the SSH host keys, run at every boot before sshd.

Each boot (see entropi-firstboot.service and README.md):

1. read /etc/entropi/firstboot.json (all keys optional),
2. apply the per-card hostname from <boot_dir>/entropi/hostname, if any,
3. compare the host keys on disk with the set it committed (/var/lib/entropi/committed.json):
   the same set costs milliseconds; what is not published yet is published again,
4. anything else (the first boot, a key missing, added, replaced, empty, unreadable, of an
   unknown type; provisional keys once the crng is ready at the start) is handled like the
   first run: remove every host key, wait (blocking getrandom, bounded) for the kernel's
   generator, make a fresh set crash-safely, commit it, publish it
   (console, journal, /etc/issue, boot partition) and say what was found and done.

Standard library only; must run on python3.7 (Raspbian Buster) and newer. The launcher
/usr/lib/entropi/entropi-firstboot calls main.main(); the modules, in the order of a run:
config, hostname, committed (the committed set and the findings), entropy (the wait), keys
(removing and making them), publish, main. run (the run's record), sshkey (key files read in
Python), device, fileops and seams serve them. This module holds what all of them share: the
program's name, log() and FirstbootError.
"""

from __future__ import annotations

import sys

VERSION = "2"
PROG = "entropi-firstboot"


class FirstbootError(Exception):
    """Something on the device went wrong (ssh-keygen failed, I/O error)."""


def log(message: str) -> None:
    sys.stderr.write("%s: %s\n" % (PROG, message))
    sys.stderr.flush()
