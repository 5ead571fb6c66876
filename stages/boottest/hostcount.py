"""Host-side counts of what each emulated RNG delivered to the guest: evidence the image cannot forge.

- virtio-rng: QEMU's `rng-egd` backend asks a character device for bytes with the EGD
  protocol (two bytes: 0x02 and a length of at most 255; the answer is that many bytes).
  ``EgdServer`` answers from the host's os.urandom and counts every byte it handed over.
- TPM: every TPM command between the guest and swtpm passes through ``TpmRelay``, which
  forwards it unchanged and counts commands by code and the random bytes TPM2_GetRandom's
  answers carried.

Both listen on a Unix socket that QEMU connects to, serve one connection on a thread, and
stop when it closes or when ``close()`` is called.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections import Counter
from pathlib import Path

EGD_READ_BLOCKING = 0x02
TPM_CC_GET_RANDOM = 0x0000017B
TPM_ST_SESSIONS = 0x8002
HEADER = struct.Struct(">HII")  # tag, size, command or response code


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class _Server:
    """One Unix socket, one client, served on a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.error = ""
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                self.serve(conn)
            except OSError as exc:
                self.error = str(exc)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)


class EgdServer(_Server):
    """Serve EGD read requests from os.urandom; ``delivered`` counts the bytes sent."""

    def __init__(self, path: Path) -> None:
        self.delivered = 0
        self.requests = 0
        super().__init__(path)

    def serve(self, conn: socket.socket) -> None:
        while True:
            head = _recv_exact(conn, 2)
            if head is None:
                return
            if head[0] != EGD_READ_BLOCKING:
                self.error = f"unexpected EGD command {head[0]:#x}"
                return
            conn.sendall(os.urandom(head[1]))
            self.delivered += head[1]
            self.requests += 1


def random_bytes_in(response: bytes) -> int:
    """How many random bytes a TPM2_GetRandom response carries (0 for an error response)."""
    if len(response) < HEADER.size:
        return 0
    tag, _, rc = HEADER.unpack_from(response)
    if rc != 0:
        return 0
    at = HEADER.size + (4 if tag == TPM_ST_SESSIONS else 0)
    if len(response) < at + 2:
        return 0
    return int(struct.unpack_from(">H", response, at)[0])


def read_frame(conn: socket.socket) -> bytes | None:
    """One TPM command or response: a 10-byte header whose size field covers the whole frame."""
    head = _recv_exact(conn, HEADER.size)
    if head is None:
        return None
    size = HEADER.unpack(head)[1]
    rest = _recv_exact(conn, max(0, size - HEADER.size)) if size > HEADER.size else b""
    return None if rest is None else head + rest


class TpmRelay(_Server):
    """Forward TPM commands from QEMU to swtpm's data socket and count them."""

    def __init__(self, path: Path, swtpm_socket: Path) -> None:
        self.swtpm_socket = swtpm_socket
        self.commands: Counter[int] = Counter()
        self.random_bytes = 0
        super().__init__(path)

    def serve(self, conn: socket.socket) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as tpm:
            tpm.connect(str(self.swtpm_socket))
            while True:
                command = read_frame(conn)
                if command is None:
                    return
                code = HEADER.unpack_from(command)[2]
                tpm.sendall(command)
                response = read_frame(tpm)
                if response is None:
                    self.error = "swtpm closed the connection"
                    return
                self.commands[code] += 1
                if code == TPM_CC_GET_RANDOM:
                    self.random_bytes += random_bytes_in(response)
                conn.sendall(response)

    def summary(self) -> dict[str, object]:
        return {"get_random_commands": self.commands[TPM_CC_GET_RANDOM], "random_bytes": self.random_bytes,
                "commands": sum(self.commands.values()),
                "by_code": {f"{code:#x}": n for code, n in sorted(self.commands.items())}}
