"""HTTP downloads: streaming, resumable (Range) from a ``.part`` file, bounded retries, TLS verified.

``download(url, part)`` appends to ``part`` (what an earlier, interrupted run left is kept and
resumed) and returns the SHA-256 of the whole file, hashed while it streams. It never renames:
the caller verifies the digest and decides where the bytes may go.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

import requests
import urllib3
from rich.progress import Progress, TaskID

from stages.core import progress
from stages.core.errors import UserError

CHUNK = 1 << 20
ATTEMPTS = 6          # tries in a row that bring no new bytes before giving up
BACKOFF = 0.5         # seconds before the first retry; doubles, at most MAX_BACKOFF
MAX_BACKOFF = 8.0
TIMEOUT = (15, 60)    # connect, read (seconds)
USER_AGENT = "entropi-fetch/1"


class DownloadError(UserError):
    """The server or the network did not deliver the file."""


class Unreachable(DownloadError):
    """Every try in a row failed (no network, the server down or failing): the file never came."""


class Hasher:
    """SHA-256 on a second thread: the main thread keeps reading the socket while it hashes."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.t = threading.Thread(target=self._work, daemon=True)
        self.t.start()

    def _work(self) -> None:
        while (chunk := self.q.get()) is not None:
            self.h.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.q.put(chunk)

    def hexdigest(self) -> str:
        self.close()
        return self.h.hexdigest()

    def close(self) -> None:
        if self.t.is_alive():
            self.q.put(None)
            self.t.join()


def url_name(url: str) -> str:
    """The file name at the end of a URL (``.../x.img.xz?raw=1`` -> ``x.img.xz``)."""
    return unquote(Path(urlparse(url).path).name) or "download"


def _session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    s.verify = True  # never turned off: a corrupt or hostile mirror is caught by TLS and the digest
    return s


def fetch_small(url: str, where: str, key: str, *, limit: int = 32 << 20) -> bytes:
    """A small file (a .sha256, a .sig, a catalogue) into memory, with the same retries."""
    if urlparse(url).scheme == "file":
        path = Path(unquote(urlparse(url).path))
        try:
            return path.read_bytes()
        except OSError as e:
            raise DownloadError(where, f"cannot read {path}: {e.strerror}", key=key, hint="check the path") from None
    last = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(min(BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF))
        try:
            with _session().get(url, timeout=TIMEOUT, stream=True) as r:
                if r.status_code >= 500 or r.status_code == 429:
                    last = f"HTTP {r.status_code}"
                    continue
                _raise_for_client_error(r, url, where, key)
                data = r.raw.read(limit + 1, decode_content=True)
                if len(data) > limit:
                    raise DownloadError(where, f"{url} is larger than {limit} bytes", key=key,
                                        hint="this setting expects a small text file")
                return bytes(data)
        except requests.exceptions.SSLError as e:
            raise DownloadError(where, f"TLS verification failed for {url}: {_short(e)}", key=key,
                                hint="the server's certificate is not trusted; set REQUESTS_CA_BUNDLE "
                                     "for a private CA") from None
        except (requests.exceptions.RequestException, OSError) as e:
            last = _short(e)
    raise Unreachable(where, f"could not fetch {url} after {ATTEMPTS} tries: {last}", key=key,
                        hint="check the network and the address, then run again")


def _raise_for_client_error(r: requests.Response, url: str, where: str, key: str) -> None:
    if 400 <= r.status_code < 500 and r.status_code != 416:
        what = "not found" if r.status_code == 404 else f"refused ({r.status_code} {r.reason})"
        raise DownloadError(where, f"{url}: {what}", key=key,
                            hint="check the address; official images move when a new release comes out")


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 200 else text[:200] + "..."


def download(url: str, part: Path, *, where: str, key: str, size: int | None = None, label: str = "") -> str:
    """Download ``url`` into ``part``, resuming from the bytes already there. Returns its SHA-256.

    A dropped connection resumes with ``Range: bytes=N-``; a server that ignores Range (200)
    restarts from zero; 5xx and network errors are retried with backoff (``ATTEMPTS`` tries
    in a row without progress); 4xx is an error at once. ``size`` (when known) is checked.
    """
    if urlparse(url).scheme == "file":
        return _copy_local(Path(unquote(urlparse(url).path)), part, where, key)
    part.parent.mkdir(parents=True, exist_ok=True)
    session = _session()
    failures = 0
    last = ""
    with progress.bytes_bar(label or url_name(url), size) as bar:
        t = _Transfer(url, part, where, key, size, bar, bar.add_task("download", total=size))
        while True:
            have = part.stat().st_size if part.exists() else 0
            if t.total is not None and have > t.total:  # not ours (a different file under the same name)
                part.unlink()
                have = 0
            if failures:
                if failures >= ATTEMPTS:
                    raise Unreachable(where, f"download of {url} failed after {failures} tries: {last} "
                                        f"({have} bytes kept in {part.name})", key=key,
                                        hint="run again to resume, or check the network and the server")
                time.sleep(min(BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))
            try:
                return t.try_once(session, have)
            except _Retry as e:
                failures, last = failures + 1, str(e)
                continue
            except requests.exceptions.SSLError as e:
                raise DownloadError(where, f"TLS verification failed for {url}: {_short(e)}", key=key,
                                    hint="the server's certificate is not trusted; set REQUESTS_CA_BUNDLE "
                                         "for a private CA") from None
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
                    TimeoutError) as e:
                last = _short(e)
            now = part.stat().st_size if part.exists() else 0
            failures = 1 if now > have else failures + 1  # progress resets the count


class _Retry(Exception):
    """An answer worth another try (5xx, 429, 416, a wrong Content-Range); the text says which."""


@dataclass
class _Transfer:
    """One download's tries: where the bytes go, the size once known, its progress bar."""

    url: str
    part: Path
    where: str
    key: str
    total: int | None
    bar: Progress
    task: TaskID

    def try_once(self, session: requests.Session, have: int) -> str:
        """One GET from byte ``have``; the whole file's SHA-256, or _Retry / a network error."""
        headers = {"Range": f"bytes={have}-", "Accept-Encoding": "identity"} if have else {
            "Accept-Encoding": "identity"}
        with session.get(self.url, headers=headers, stream=True, timeout=TIMEOUT) as r:
            if r.status_code == 416 and have and have == _range_total(r):
                return _hash_file(self.part)  # the .part already holds the whole file
            if r.status_code == 416:
                self.part.unlink()
                raise _Retry("416 range not satisfiable; restarting")
            if r.status_code >= 500 or r.status_code == 429:
                raise _Retry(f"HTTP {r.status_code} {r.reason}")
            _raise_for_client_error(r, self.url, self.where, self.key)
            if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                raise _Retry(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            if r.status_code != 206:
                have = 0  # 200: the server sends the whole file; start again cleanly
            expected_end = self._expected_end(r, have)
            got, digest = self._write(r, have)
            if expected_end is not None and got != expected_end:
                raise requests.exceptions.ChunkedEncodingError(f"connection ended at byte {got} of {self.total}")
            return digest

    def _expected_end(self, r: requests.Response, have: int) -> int | None:
        """Where this answer's body ends, checked against the size known so far (then it is known)."""
        length = r.headers.get("Content-Length")
        expected_end = have + int(length) if length and length.isdigit() else None
        if r.status_code == 206:
            expected_end = _range_total(r) or expected_end
        if expected_end is not None:
            if self.total is not None and expected_end != self.total:
                raise DownloadError(self.where, f"{self.url} has {expected_end} bytes, expected {self.total}",
                                    key=self.key, hint="the catalogue or the server is out of date")
            self.total = expected_end
            self.bar.update(self.task, total=self.total)
        return expected_end

    def _write(self, r: requests.Response, have: int) -> tuple[int, str]:
        """Append the body to the .part after its first ``have`` bytes; (bytes in the file, SHA-256)."""
        hasher = Hasher()
        with open(self.part, "r+b" if have else "wb") as f:
            if have:
                _hash_into(f, have, hasher)
            f.seek(have)
            f.truncate()
            self.bar.update(self.task, completed=have)
            try:
                _stream(r, f, hasher, lambda n: self.bar.advance(self.task, n))
            finally:
                f.flush()
                got = f.tell()
                digest = hasher.hexdigest()
        return got, digest


def _range_total(r: requests.Response) -> int | None:
    cr = r.headers.get("Content-Range", "")
    tail = cr.rpartition("/")[2]
    return int(tail) if tail.isdigit() else None


def _stream(r: requests.Response, f: IO[bytes], hasher: Hasher, advance: Callable[[int], None]) -> None:
    write, read1 = f.write, r.raw.read1  # read1: what has arrived, so a dropped link keeps those bytes
    while chunk := read1(CHUNK):
        write(chunk)
        hasher.update(chunk)
        advance(len(chunk))


def _hash_into(f: IO[bytes], length: int, hasher: Hasher) -> None:
    f.seek(0)
    left = length
    while left > 0:
        chunk = f.read(min(CHUNK * 4, left))
        if not chunk:
            break
        hasher.update(chunk)
        left -= len(chunk)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 4):
            h.update(chunk)
    return h.hexdigest()


def _copy_local(src: Path, part: Path, where: str, key: str) -> str:
    """file:// URLs: copy (hashing) into the .part like a download."""
    if not src.is_file():
        raise DownloadError(where, f"no such file: {src}", key=key, hint="check the file:// address")
    h = hashlib.sha256()
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(part, "wb") as fo:
        while chunk := fi.read(CHUNK * 4):
            h.update(chunk)
            fo.write(chunk)
    os.utime(part)
    return h.hexdigest()
