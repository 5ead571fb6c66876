"""The first-boot element's tests share the suite's CI rule and per-marker counts (tests/conftest.py),
and these fixtures: the program's package, a fake card (helpers.Tree), a fake clock and the
kernel's generator on it."""

from __future__ import annotations

import pytest

import firstboot.entropi_firstboot.main  # noqa: F401  (loads every module of the package)
from firstboot import entropi_firstboot
from firstboot.tests.helpers import FakeClock, FakeKernel, Tree
from tests.conftest import pytest_runtest_makereport  # noqa: F401  (a hook: applies to the tests below)


@pytest.fixture
def fb():
    """The program's package, every module loaded (fb.main, fb.seams, fb.config, ...): the
    code the launcher runs, imported from firstboot/entropi_firstboot/."""
    return entropi_firstboot


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


@pytest.fixture
def clock(fb, monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(fb.seams, "monotonic", fake.monotonic)
    monkeypatch.setattr(fb.seams, "sleep", fake.sleep)
    return fake


@pytest.fixture
def crng(fb, clock, monkeypatch):
    """crng(at): the kernel's crng becomes ready at fake time ``at`` (inf: never); returns
    the FakeKernel. Blocked calls are released when the test ends."""
    kernels = []

    def ready_at(at: float) -> FakeKernel:
        kernel = FakeKernel(clock, at)
        kernels.append(kernel)
        monkeypatch.setattr(fb.seams, "getrandom", kernel.getrandom)
        monkeypatch.setattr(fb.seams, "blocking_random", kernel.blocking_random)
        monkeypatch.setattr(fb.seams, "wait", kernel.wait)
        return kernel

    yield ready_at
    for kernel in kernels:
        kernel.close()
