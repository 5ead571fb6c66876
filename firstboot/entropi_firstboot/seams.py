"""The calls tests replace (monkeypatch these names here): the generator, the clock, the
waits and the one write.

Every module calls them as seams.NAME(...), so one replacement reaches the whole run.
"""

from __future__ import annotations

import os
import threading
import time


def getrandom(size: int, flags: int) -> bytes:
    """os.getrandom; used only with GRND_NONBLOCK, to ask whether the crng is ready."""
    return os.getrandom(size, flags)


def blocking_random(size: int) -> bytes:
    """getrandom(size, 0): blocks until the crng is ready; while it blocks, the kernel
    (5.4+) runs try_to_generate_entropy (CPU jitter), which is what makes it ready soon.

    os.urandom is that call on Linux (PEP 524; /dev/urandom only where the kernel has no
    getrandom) and it releases the GIL while it blocks. os.getrandom(size, 0) holds the GIL
    (measured on CPython 3.7, 3.9, 3.11 and 3.13): a thread blocked in it would stall the
    main thread's bounded wait too, so it is not used here.
    """
    return os.urandom(size)


def wait(event: threading.Event, timeout: float) -> bool:
    """Event.wait(timeout): the main thread's bounded wait for the blocking call."""
    return event.wait(timeout)


def monotonic() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def write(fd: int, data: memoryview) -> int:
    """os.write: may write fewer bytes than asked; fileops loops to the end."""
    return os.write(fd, data)
