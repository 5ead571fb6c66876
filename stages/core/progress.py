"""Step display: every long step prints its name and elapsed time; nested steps indent."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
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


def bytes_bar(description: str, total: int | None) -> Progress:
    """A progress bar for bytes: size, rate, ETA."""
    return Progress(
        TextColumn(f"{_indent()}{description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal and "pytest" in sys.modules,
    )
