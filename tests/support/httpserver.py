"""A real HTTP server on 127.0.0.1 for fetch tests and benchmarks (stdlib only).

Serves files or bytes with Range support (``os.sendfile`` when nothing is faked) and can be
told, per path, to misbehave: drop the connection after N bytes, ignore Range, answer 500
a few times first, serve wrong bytes, answer a fixed status (404), or stop after N bytes and
hold the connection open until the test says go (``held``/``release``: events, not timing).

    with HTTPTestServer() as srv:
        url = srv.add("img.xz", path, Fault(drop_after=4096))
        ...
        assert srv.requests("img.xz")[1].range == "bytes=4096-"
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


@dataclass
class Fault:
    """What a path does wrong. Counters (``drop_times``, ``fail_first``) count down per request."""

    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_times: int = 1            # ... for this many responses
    ignore_range: bool = False     # always answer 200 with the whole file
    fail_first: int = 0            # answer 500 this many times before behaving
    status: int | None = None      # always answer this status (e.g. 404)
    corrupt: bool = False          # flip one byte in the middle of the file
    hold_at: int | None = None     # send this many body bytes, then wait for ``release`` (Ctrl-C tests)
    held: threading.Event = field(default_factory=threading.Event)     # set once ``hold_at`` bytes are out
    release: threading.Event = field(default_factory=threading.Event)  # set by the test to go on


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class _Entry:
    source: Path | bytes
    fault: Fault = field(default_factory=Fault)

    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _status_only(self, code: int, rng: str | None, name: str) -> None:
        self.server.owner._log(Request(name, rng, code))
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        name = self.path.lstrip("/").split("?")[0]
        rng = self.headers.get("Range")
        entry = self.server.owner._entry(name)
        if entry is None:
            return self._status_only(404, rng, name)
        fault = entry.fault
        with self.server.owner._lock:
            if fault.status is not None:
                code: int | None = fault.status
            elif fault.fail_first > 0:
                fault.fail_first -= 1
                code = 500
            else:
                code = None
            drop = fault.drop_after if fault.drop_after is not None and fault.drop_times > 0 else None
            if drop is not None and body:
                fault.drop_times -= 1
        if code is not None:
            return self._status_only(code, rng, name)
        size = entry.size()
        start, end = 0, size - 1
        status = 200
        m = _RANGE.match(rng or "")
        if m and not fault.ignore_range:
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.server.owner._log(Request(name, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1
        self.server.owner._log(Request(name, rng, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "none" if fault.ignore_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        limit = length if drop is None else min(length, drop)
        if isinstance(entry.source, Path) and not fault.corrupt and fault.hold_at is None:
            self._sendfile(entry.source, start, limit)
        else:
            self._write_slowly(entry, start, limit, fault)
        if drop is not None and limit < length:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _sendfile(self, path: Path, offset: int, count: int) -> None:
        sock = self.connection.fileno()
        with open(path, "rb") as f:
            while count > 0:
                try:
                    sent = os.sendfile(sock, f.fileno(), offset, min(count, 64 << 20))
                except (BrokenPipeError, ConnectionResetError):
                    return
                if sent == 0:
                    return
                offset += sent
                count -= sent

    def _write_slowly(self, entry: _Entry, offset: int, count: int, fault: Fault) -> None:
        size = entry.size()
        middle = size // 2
        chunk = 1 << 20
        hold = None if fault.hold_at is None else offset + fault.hold_at
        with (open(entry.source, "rb") if isinstance(entry.source, Path) else _BytesFile(entry.source)) as f:
            f.seek(offset)
            while count > 0:
                want = min(chunk, count) if hold is None or offset >= hold else min(chunk, count, hold - offset)
                data = bytearray(f.read(want))
                if not data:
                    return
                if fault.corrupt and offset <= middle < offset + len(data):
                    data[middle - offset] ^= 0xFF
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                offset += len(data)
                count -= len(data)
                if hold is not None and offset == hold:
                    self.wfile.flush()
                    fault.held.set()
                    fault.release.wait(120)  # the test releases; the bound only ends a forgotten hold


class _BytesFile:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __enter__(self) -> _BytesFile:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    owner: HTTPTestServer


class HTTPTestServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving registered paths."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._log_entries: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def add(self, name: str, source: Path | bytes, fault: Fault | None = None) -> str:
        """Serve ``source`` at /name (replacing what was there); returns its URL."""
        with self._lock:
            self._entries[name] = _Entry(source, fault or Fault())
        return self.url(name)

    def set_fault(self, name: str, fault: Fault) -> None:
        with self._lock:
            self._entries[name].fault = fault

    def requests(self, name: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._log_entries if name is None or r.path == name]

    def _entry(self, name: str) -> _Entry | None:
        with self._lock:
            return self._entries.get(name)

    def _log(self, request: Request) -> None:
        with self._lock:
            self._log_entries.append(request)

    def start(self) -> HTTPTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HTTPTestServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":  # serve a directory by hand: python tests/support/httpserver.py DIR
    import sys

    srv = HTTPTestServer()
    for p in Path(sys.argv[1]).iterdir():
        if p.is_file():
            srv.add(p.name, p)
    srv.start()
    print(srv.base_url, flush=True)
    threading.Event().wait()
