"""A TPM 1.2 on the host for trousers' tcsd in a `boot-test --tpm` guest (T4's negative control).

tcsd speaks TPM 1.2 only and the boot test's TPM is a 2.0, on which tcsd exits at once.
trousers reaches a TPM that is not /dev/tpm0 with `tcsd -e` and TCSD_TCP_DEVICE_HOSTNAME/PORT
(how swtpm's TPM 1.2 tests run it); QEMU's user network takes the guest's connections to
10.0.2.2 to the host's 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

HOST_FROM_GUEST = "10.0.2.2"  # QEMU user networking: the host's loopback


@contextlib.contextmanager
def tpm12_on_host(state: Path, timeout: float = 30) -> Iterator[int]:
    """An swtpm emulating a TPM 1.2 (TPM_Startup(ST_CLEAR) done) on 127.0.0.1:PORT; yields PORT
    once it listens (swtpm writes its pid file after it bound the port)."""
    state.mkdir(parents=True, exist_ok=True)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = int(free.getsockname()[1])
    pidfile = state / "swtpm.pid"
    pidfile.unlink(missing_ok=True)
    proc = subprocess.Popen(["swtpm", "socket", "--tpmstate", f"dir={state}",
                             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                             "--flags", "not-need-init,startup-clear", "--pid", f"file={pidfile}",
                             "--log", f"file={state / 'swtpm.log'},level=1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not (pidfile.exists() and pidfile.read_text().strip()):
            if time.monotonic() > deadline or _exited(proc, 0.05):
                err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None and proc.stderr else ""
                raise RuntimeError(f"swtpm (TPM 1.2) did not start: {err.strip() or 'no pid file'}")
        yield port
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _exited(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
