"""entropi-firstboot: make SSH host keys on the Pi once the kernel has entropy.

Runs once, before ssh.service (see entropi-firstboot.service and README.md):

1. read /etc/entropi/firstboot.json (all keys optional),
2. apply the per-card hostname from <boot_dir>/entropi/hostname, if any,
3. record the entropy evidence (kernel, hwrng, crng, entropy_avail, rngd),
4. remove host keys that cannot be trusted (pre-baked keys on a fresh start;
   empty, truncated or mismatched pairs; leftovers of an interrupted run),
5. wait, bounded, until the crng is ready (and, on kernels with a 4096-bit
   pool, until entropy_avail >= min_entropy),
6. make the missing host keys crash-safely with ssh-keygen,
7. publish the fingerprints (console, journal, /etc/issue, boot partition),
8. write the stand-down marker /var/lib/entropi/firstboot.done.

Standard library only; must run on python3.7 (Raspbian Buster) and newer. The launcher
/usr/lib/entropi/entropi-firstboot calls main.main(); the modules, in the order of a run:
config, hostname, run (the run's record and evidence), trust (which keys are kept),
entropy (the wait), keys (making them), publish, main. device, fileops and seams serve them.
This module holds what all of them share: the program's name, log() and FirstbootError.
"""

from __future__ import annotations

import sys

VERSION = "1"
PROG = "entropi-firstboot"


class FirstbootError(Exception):
    """Something on the device went wrong (ssh-keygen failed, I/O error)."""


def log(message: str) -> None:
    sys.stderr.write("%s: %s\n" % (PROG, message))
    sys.stderr.flush()
