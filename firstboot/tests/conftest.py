"""The first-boot element's tests share the suite's CI rule and per-marker counts (tests/conftest.py)."""

from tests.conftest import pytest_runtest_makereport  # noqa: F401  (a hook: applies to the tests below)
