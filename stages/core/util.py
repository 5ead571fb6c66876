"""Small shared helpers: subprocesses that are always reaped, hashing, atomic outputs."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from stages.core.errors import UserError

_children: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


class CommandFailed(UserError):
    """A tool the pipeline ran exited non-zero; its stderr is kept in the message."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str, hint: str = "") -> None:
        tail = " | ".join(stderr.strip().splitlines()[-4:]) or "(no output)"
        super().__init__(
            argv[0], f"exited with {code}: {tail}", hint=hint or f"the command was: {' '.join(argv)}"
        )
        self.code = code
        self.stderr = stderr


def spawn(argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
    """Start a child in its own process group and remember it, so teardown can kill it."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), start_new_session=True, **kw)  # type: ignore[call-overload]
    with _lock:
        _children.add(proc)
    return proc


def forget(proc: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.discard(proc)


def kill_children() -> int:
    """Kill every child (and its process group) still running; returns how many."""
    with _lock:
        procs = list(_children)
        _children.clear()
    killed = 0
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed += 1
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    return killed


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    hint: str = "",
    check: bool = True,
    timeout: float | None = None,
    stdout: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command from an argument list; keep stderr and raise CommandFailed on error."""
    try:
        proc = spawn(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise UserError(argv[0], "command not found", hint="run ./ci/setup to install the tools") from None
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CommandFailed(argv, -9, err.decode(errors="replace") + f"\ntimed out after {timeout}s", hint) from None
    finally:
        forget(proc)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, err.decode(errors="replace"), hint)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out or b"", err)


def text(argv: Sequence[str], **kw: object) -> str:
    """Run a command and return its stdout as stripped text."""
    return run(argv, **kw).stdout.decode(errors="replace").strip()  # type: ignore[arg-type]


def sha256_file(path: str | Path, bufsize: int = 4 << 20) -> str:
    """SHA-256 of a file; holes of a sparse file are hashed as zeros without reading them."""
    h = hashlib.sha256()
    zeros = memoryview(bytes(bufsize))
    buf = memoryview(bytearray(bufsize))
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole up to the end
                data = size
            while pos < data:
                n = min(bufsize, data - pos)
                h.update(zeros[:n])
                pos += n
            hole = os.lseek(fd, pos, os.SEEK_HOLE) if pos < size else size
            f.seek(pos)
            while pos < hole:
                n = f.readinto(buf[:min(bufsize, hole - pos)])
                if not n:  # the file shrank while being read
                    raise OSError(f"{path}: unexpected end of file at byte {pos}")
                h.update(buf[:n])
                pos += n
    return h.hexdigest()


def tool_version(argv: Sequence[str]) -> str:
    """First line a tool prints about its version, or 'missing'."""
    if shutil.which(argv[0]) is None:
        return "missing"
    try:
        res = subprocess.run(list(argv), capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (res.stdout or res.stderr).decode(errors="replace").strip().splitlines()
    return lines[0] if lines else "unknown"


def cache_dir() -> Path:
    """The cache outside the repo (base images, downloads): $ENTROPI_CACHE or ~/.cache/entropi."""
    return Path(os.environ.get("ENTROPI_CACHE", Path.home() / ".cache" / "entropi"))


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything mounted below ``path`` (an interrupted chroot)."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def tmp_name(final: Path) -> Path:
    """The temporary name an output is written under until it is whole."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` only if the block succeeds."""
    tmp = tmp_name(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
