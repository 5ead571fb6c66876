"""Waiting, bounded by wait_timeout, for the kernel's generator: the crng ready and, on
kernels with a 4096-bit pool (before Linux 5.18), entropy_avail >= min_entropy.

The crng is waited for with a *blocking* getrandom in a daemon thread: only a blocking call
makes the kernel (5.4+) collect CPU jitter entropy (try_to_generate_entropy), which usually
makes it ready within a second; a non-blocking poll never does. The main thread waits for
the call on an Event, with the timeout; a call still blocked at the timeout is left behind
(the thread is a daemon, the process does not wait for it).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from . import log, seams
from .device import NEW_POOL_BITS
from .run import Run

# Seconds between two looks at entropy_avail (old kernels only).
POLL_INTERVAL = 0.2
# Seconds between two progress lines while waiting.
PROGRESS_EVERY = 10.0
# Bytes the blocking call asks for (any size waits the same).
BLOCKING_BYTES = 16


def _wait_settings(run: Run) -> Dict[str, Any]:
    """What the wait looks for on this kernel (recorded as the evidence's "wait")."""
    poolsize = run.start_snapshot.get("poolsize")
    legacy = poolsize is not None and poolsize > NEW_POOL_BITS
    min_entropy = min(run.config["min_entropy"], poolsize) if legacy else None
    return {"timeout": float(run.config["wait_timeout"]), "on_timeout": run.config["on_timeout"],
            "legacy_pool": legacy, "min_entropy": min_entropy, "method": "blocking getrandom"}


def ready_now(run: Run) -> bool:
    """The generator was ready when the guard started (crng, and the level on old kernels)."""
    view = run.start_snapshot
    if not view.get("crng_ready"):
        return False
    poolsize = view.get("poolsize")
    if poolsize is not None and poolsize > NEW_POOL_BITS:
        return (view.get("entropy_avail") or 0) >= min(run.config["min_entropy"], poolsize)
    return True


def wait_for_entropy(run: Run) -> bool:
    """Wait for the crng (blocking getrandom) and, on old kernels, the level; False on timeout."""
    now = seams.monotonic()
    # Not ready when the guard started: the wait began then (the interpreter's start may
    # have had the kernel collect jitter entropy since, see entropi-guard).
    unready_at_start = run.start_snapshot.get("crng_ready") is False
    start = min(now, float(run.start_snapshot.get("monotonic", now))) if unready_at_start else now
    run.wait = _wait_settings(run)
    deadline = start + run.wait["timeout"]
    legacy = run.wait["legacy_pool"]
    ready = run.machine.crng_ready()
    log("waiting for the kernel's random generator (crng %s%s, at most %gs)"
        % ("ready" if ready else "not ready", ", entropy_avail >= %d" % run.wait["min_entropy"] if legacy else "",
           run.wait["timeout"]))
    if ready:
        run.crng_ready_at = round(now, 3)
        if unready_at_start:
            log("the crng was not ready when the guard started (entropy_avail %s/%s at %ss of uptime); "
                "ready %.1fs later" % (run.start_snapshot.get("entropy_avail"), run.start_snapshot.get("poolsize"),
                                        run.start_snapshot.get("uptime"), now - start))
    elif ready is False:
        ready = _wait_for_crng(run, deadline)
    level_ok = ready is not False and _wait_for_level(run, deadline, ready is None)
    run.end_snapshot = run.machine.snapshot(full=False)  # the kernel's view when the wait ended
    avail = run.end_snapshot["entropy_avail"]
    run.wait.update({
        "waited_seconds": round(seams.monotonic() - start, 3),
        "timed_out": not level_ok,
        "crng_ready_at_end": bool(ready),
        "entropy_avail_at_end": avail,
    })
    if not level_ok:
        run.wait["reason"] = "crng not ready" if not ready else "entropy_avail %s < %d" % (
            avail, run.wait["min_entropy"] or run.config["min_entropy"])
    return level_ok


def _wait_for_crng(run: Run, deadline: float) -> Optional[bool]:
    """The blocking call in a thread, bounded: True once it returned, False at the timeout,
    None if the call failed (then only the level can tell)."""
    done = threading.Event()
    outcome: Dict[str, Any] = {}

    def call() -> None:
        try:
            seams.blocking_random(BLOCKING_BYTES)
        except Exception as exc:  # reported below; a thread must not die silently
            outcome["error"] = str(exc)
        finally:
            outcome["at"] = seams.monotonic()
            done.set()

    thread = threading.Thread(target=call, name="entropi-getrandom")
    thread.daemon = True
    thread.start()
    log("the crng is not ready: a blocking getrandom lets the kernel collect jitter entropy")
    began = seams.monotonic()
    while not seams.wait(done, max(0.0, min(PROGRESS_EVERY, deadline - seams.monotonic()))):
        now = seams.monotonic()
        if now >= deadline:
            run.wait["blocking_call"] = "still blocked at the timeout"
            return False
        avail, poolsize = run.machine.entropy()
        log("still waiting after %.0fs: crng not ready, entropy_avail=%s/%s" % (now - began, avail, poolsize))
    if "error" in outcome:
        run.warn("the blocking getrandom failed (%s): falling back to entropy_avail" % outcome["error"])
        run.wait["blocking_call"] = "failed: " + outcome["error"]
        return None
    run.wait["blocking_call"] = "returned"
    run.crng_ready_at = round(outcome["at"], 3)
    return True


def _wait_for_level(run: Run, deadline: float, no_crng_answer: bool) -> bool:
    """On kernels with a 4096-bit pool (or with no answer about the crng): poll until
    entropy_avail >= min_entropy. True at once on new kernels, whose crng is the answer."""
    if not run.wait["legacy_pool"] and not no_crng_answer:
        return True
    wanted = run.wait["min_entropy"] or run.config["min_entropy"]
    polls = 0
    last_progress = began = seams.monotonic()
    while True:
        avail, poolsize = run.machine.entropy()
        now = seams.monotonic()
        if avail is not None and avail >= wanted:
            run.level_reached_at = round(now, 3)
            run.wait["polls"] = polls
            return True
        if now >= deadline:
            run.wait["polls"] = polls
            return False
        if now - last_progress >= PROGRESS_EVERY:
            log("still waiting after %.0fs: entropy_avail=%s/%s, want %d" % (now - began, avail, poolsize, wanted))
            last_progress = now
        polls += 1
        seams.sleep(POLL_INTERVAL)
