"""Subprocesses: run with argument lists, stderr kept for the error, always reaped on teardown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
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
