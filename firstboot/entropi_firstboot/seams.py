"""The calls tests replace (monkeypatch these names here): the crng probe and the clock.

Every module calls them as seams.NAME(...), so one replacement reaches the whole run.
"""

from __future__ import annotations

import os
import time


def getrandom(size: int, flags: int) -> bytes:
    """os.getrandom; tests replace it to fake a crng that is not ready yet."""
    return os.getrandom(size, flags)


def monotonic() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)
