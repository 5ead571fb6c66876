"""The wait for the kernel's generator with the real blocking call, in a real process.

A small preloaded library (built here with the C compiler) plays a board whose crng is not
ready: getrandom(GRND_NONBLOCK) fails with EAGAIN and a blocking getrandom blocks, until the
test creates a file; then both pass through to the kernel. It catches getrandom() of the C
library (os.urandom) and syscall(SYS_getrandom) (os.getrandom), so the launcher runs
unchanged. What it proves: the blocking call leaves the main thread free, so wait_timeout
bounds the wait, and the wait ends when the call returns. The negative control shows why the
program does not use os.getrandom(n, 0): that call holds the GIL while it blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firstboot.tests.helpers import FAST_KEYS, PACKAGE, PROGRAM, SSH_KEYGEN, Tree

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static long (*real_syscall)(long, ...);

static int crng_ready(void) {
    const char *flag = getenv("ENTROPI_TEST_CRNG_READY");
    struct stat st;
    return flag != NULL && stat(flag, &st) == 0;
}

static ssize_t fake_getrandom(void *buf, size_t len, unsigned int flags) {
    while (!crng_ready()) {
        if (flags & 1) { errno = EAGAIN; return -1; }   /* GRND_NONBLOCK */
        usleep(10000);                                  /* blocked, as in the kernel */
    }
    if (real_syscall == NULL) real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real_syscall(SYS_getrandom, buf, len, flags);
}

ssize_t getrandom(void *buf, size_t len, unsigned int flags) { return fake_getrandom(buf, len, flags); }

long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
    long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_getrandom) return fake_getrandom((void *)a, (size_t)b, (unsigned int)c);
    if (real_syscall == NULL) real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real_syscall(number, a, b, c, d, e, f);
}
"""

pytestmark = pytest.mark.skipif(not os.path.exists(SSH_KEYGEN), reason="ssh-keygen not installed")


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the getrandom shim (package gcc)")
    work = tmp_path_factory.mktemp("shim")
    (work / "shim.c").write_text(SHIM)
    res = subprocess.run([cc, "-shared", "-fPIC", "-o", str(work / "shim.so"), str(work / "shim.c"), "-ldl"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return work / "shim.so"


def environment(shim: Path, ready: Path) -> dict:
    env = dict(os.environ, LD_PRELOAD=str(shim), ENTROPI_TEST_CRNG_READY=str(ready))
    env.pop("ENTROPI_FIRSTBOOT_FAULT_AFTER", None)
    return env


def verdict_of(stdout: str) -> dict:
    line = [x for x in stdout.splitlines() if x.startswith("ENTROPI-FIRSTBOOT ")][-1]
    return json.loads(line[len("ENTROPI-FIRSTBOOT "):])


def test_a_blocking_call_that_never_returns_is_bounded_by_wait_timeout(tmp_path, shim):
    tree = Tree(tmp_path)
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 1, "on_timeout": "fail"})

    res = subprocess.run([sys.executable, str(PROGRAM), *tree.args()], env=environment(shim, tmp_path / "never"),
                         capture_output=True, text=True, timeout=60)

    verdict = verdict_of(res.stdout)
    assert res.returncode == 1, res.stderr
    assert verdict["error"] == "entropy wait timed out (crng not ready)"
    assert 1.0 <= verdict["waited_seconds"] < 10, verdict["waited_seconds"]
    assert verdict["at_start"]["crng_ready"] is False


def test_the_wait_ends_when_the_blocking_call_returns_and_the_keys_come_after(tmp_path, shim):
    tree = Tree(tmp_path)
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 120})
    ready = tmp_path / "crng-ready"
    proc = subprocess.Popen([sys.executable, str(PROGRAM), *tree.args()], env=environment(shim, ready),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # the event: the program says it waits
            seen.append(line)
            if "the crng is not ready: a blocking getrandom" in line:
                break
        ready.touch()  # the crng becomes ready
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    verdict = verdict_of(out)
    assert proc.returncode == 0, "".join(seen) + err
    assert verdict["status"] == "ok" and verdict["crng_ready_before_keys"] is True
    assert verdict["at_start"]["crng_ready"] is False and verdict["at_end"]["crng_ready"] is True
    ev = json.loads((tree.root / "var/log/entropi/firstboot-evidence.json").read_text())
    assert ev["wait"]["blocking_call"] == "returned"
    assert ev["started_at"] < ev["crng_ready_at"] <= ev["first_keygen_started_at"]


def test_negative_control_os_getrandom_blocking_holds_the_gil_and_the_timeout_never_fires(tmp_path, shim):
    lib = tmp_path / "lib"
    shutil.copytree(str(PACKAGE), str(lib / PACKAGE.name), ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(str(PROGRAM), str(lib / PROGRAM.name))
    seams = lib / PACKAGE.name / "seams.py"
    seams.write_text(seams.read_text().replace("return os.urandom(size)", "return os.getrandom(size, 0)"))
    tree = Tree(tmp_path)
    tree.config({"key_types": FAST_KEYS, "wait_timeout": 0.3, "on_timeout": "fail"})

    with pytest.raises(subprocess.TimeoutExpired):  # ten times the program's own bound
        subprocess.run([sys.executable, str(lib / PROGRAM.name), *tree.args()],
                       env=environment(shim, tmp_path / "never"), capture_output=True, timeout=3)
