"""Waiting, bounded, for the kernel's generator: the crng ready and, on kernels with a
4096-bit pool (before Linux 5.18), entropy_avail >= min_entropy."""

from __future__ import annotations

from typing import Any, Dict

from . import log, seams
from .run import Run

# Seconds between two looks at the kernel's generator while waiting.
POLL_INTERVAL = 0.2
# Seconds between two progress lines while waiting.
PROGRESS_EVERY = 10.0


def _wait_settings(run: Run) -> Dict[str, Any]:
    """What the wait looks for on this kernel (recorded as the evidence's "wait")."""
    _, poolsize = run.machine.entropy()
    legacy = poolsize is not None and poolsize > 256
    min_entropy = run.config["min_entropy"]
    if legacy and min_entropy > poolsize:
        min_entropy = poolsize
    return {"timeout": float(run.config["wait_timeout"]), "on_timeout": run.config["on_timeout"],
            "legacy_pool": legacy, "min_entropy": min_entropy if legacy else None,
            "poll_interval": POLL_INTERVAL}


def wait_for_entropy(run: Run) -> bool:
    """Poll until the generator is ready; False on timeout."""
    machine = run.machine
    start = seams.monotonic()
    last_progress = start
    run.wait = _wait_settings(run)
    timeout, legacy = run.wait["timeout"], run.wait["legacy_pool"]
    min_entropy = run.wait["min_entropy"] if legacy else run.config["min_entropy"]
    log("waiting for the kernel's random generator (crng%s, at most %gs)"
        % (" and entropy_avail >= %d" % min_entropy if legacy else "", timeout))
    polls = 0
    while True:
        now = seams.monotonic()
        ready = machine.crng_ready()
        avail, poolsize = machine.entropy()
        if ready and run.crng_ready_at is None:
            run.crng_ready_at = round(now, 3)
        level_ok = not legacy or (avail is not None and avail >= min_entropy)
        if ready is None:  # no getrandom(): only the level can tell
            level_ok = avail is not None and avail >= min_entropy
        if level_ok and legacy and run.level_reached_at is None:
            run.level_reached_at = round(now, 3)
        if (ready or ready is None) and level_ok:
            timed_out = False
            break
        if now - start >= timeout:
            timed_out = True
            break
        if now - last_progress >= PROGRESS_EVERY:
            log("still waiting after %.0fs: crng ready=%s entropy_avail=%s/%s"
                % (now - start, ready, avail, poolsize))
            last_progress = now
        polls += 1
        seams.sleep(POLL_INTERVAL)
    run.wait.update({
        "waited_seconds": round(seams.monotonic() - start, 3),
        "timed_out": timed_out,
        "polls": polls,
        "crng_ready_at_end": bool(ready),
        "entropy_avail_at_end": avail,
    })
    if timed_out:
        run.wait["reason"] = "crng not ready" if not ready else \
            "entropy_avail %s < %d" % (avail, min_entropy)
    return not timed_out
