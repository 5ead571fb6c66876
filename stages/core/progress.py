"""Step display: every long step prints its name and elapsed time; nested steps indent."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(stderr=True, highlight=False)
_depth = threading.local()


def _indent() -> str:
    return "  " * getattr(_depth, "n", 0)


def info(message: str) -> None:
    console.print(f"{_indent()}{message}", markup=False)


def warn(message: str) -> None:
    # one line however long (the terminal folds it); "[bcm2835]" is text, not markup
    console.print(f"{_indent()}[yellow]warning:[/] {escape(message)}", soft_wrap=True)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print ``name``, run the block with a spinner (on a terminal), print the elapsed time."""
    indent = _indent()
    start = time.monotonic()
    _depth.n = getattr(_depth, "n", 0) + 1
    status = None
    if console.is_terminal:
        status = console.status(f"{indent}{name}")
        status.start()
    else:
        console.print(f"{indent}- {name} ...", markup=False)
    ok = False
    try:
        yield
        ok = True
    finally:
        _depth.n -= 1
        if status is not None:
            status.stop()
        mark = "[green]done[/]" if ok else "[red]failed[/]"
        console.print(f"{indent}{mark} {name} [dim]({time.monotonic() - start:.1f}s)[/]")


def _bytes_display(label: str) -> Progress:
    """Bars of bytes (size, rate, ETA) under ``label``, a TextColumn format."""
    return Progress(
        TextColumn(f"{_indent()}{label}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal and "pytest" in sys.modules,
    )


class Bar:
    """One bar of bytes: what a long copy reports its progress to."""

    def __init__(self, display: Progress, task: TaskID) -> None:
        self._display, self._task = display, task

    def advance(self, n: int) -> None:
        self._display.advance(self._task, n)

    def update(self, completed: int) -> None:
        self._display.update(self._task, completed=completed)


def bytes_bar(description: str, total: int | None) -> Progress:
    """A progress bar for bytes: size, rate, ETA."""
    return _bytes_display(description)


Meter = Callable[[str, "int | None"], AbstractContextManager[Bar]]


def board() -> Progress:
    """One display for many bars at once (one per card), each named by its description; thread-safe."""
    return _bytes_display("{task.description}")


@contextmanager
def bar(description: str, total: int | None, on: Progress | None = None) -> Iterator[Bar]:
    """A bar of bytes: a row of ``on`` (a board already shown) or a display of its own (a Meter)."""
    if on is not None:
        yield Bar(on, on.add_task(description, total=total))
        return
    with bytes_bar(description, total) as display:
        yield Bar(display, display.add_task(description, total=total))
