"""Shared fixtures. Integration and boot tests skip with a reason when a tool is missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing host tools: {', '.join(missing)} (run ./ci/setup)")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def root_dir() -> Path:
    return ROOT


def _base(arch: str, suite: str = "bookworm") -> Path:
    """The cached Debian-built base image for ``arch`` (built on first use, minutes)."""
    need_root()
    need_tools("mmdebstrap", "mkfs.vfat", "mcopy", "sfdisk")
    from stages.source.debian_base import BaseSpec, ensure_base

    with timed("base image", f"{arch} ({suite})"):
        return ensure_base(BaseSpec(arch, suite))


@pytest.fixture(scope="session")
def base_arm64() -> Path:
    """The arm64 base image."""
    return _base("arm64")


@pytest.fixture(scope="session")
def base_armhf() -> Path:
    """The armhf base (legacy /boot layout)."""
    return _base("armhf")


@pytest.fixture(scope="session")
def base_trixie_arm64() -> Path:
    """The arm64 trixie base, shaped like today's Raspberry Pi OS (cloud-init, initramfs resize)."""
    return _base("arm64", "trixie")


@pytest.fixture(scope="session")
def user_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway SSH key pair for the recipe's authorized_keys (private key path)."""
    need_tools("ssh-keygen")
    import subprocess

    key = tmp_path_factory.mktemp("userkey") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "entropi-test", "-f", str(key)], check=True)
    return key


PASSWORD_HASH = "$6$entropitest$mwUonLwkY0A/84S6vCbkU6hyBPhNtM3zS1yBRTA3DgrAh19VF.ps.2L8THcvuwe6aPZhmBViuhqBnUuWlOX7s."  # openssl passwd -6 -salt entropitest 'correct horse'  # noqa: E501


def write_test_recipe(directory: Path, arch: str, pubkey: Path, suite: str = "bookworm") -> Path:
    name = f"ci-{arch}" if suite == "bookworm" else f"ci-{suite}-{arch}"
    recipe = directory / f"{name}.toml"
    recipe.write_text(
        f'[base]\nsource = "debian"\narch = "{arch}"\nsuite = "{suite}"\n\n'
        '[image]\ngrow = "+256M"\n'
        f'{"shrink = true" if arch == "armhf" or suite == "trixie" else ""}\n\n'
        f'[users]\nname = "pi"\npassword_hash = "{PASSWORD_HASH}"\nauthorized_keys = ["{pubkey}"]\n\n'
        '[ssh]\nkey_types = ["ed25519", "ecdsa", "rsa"]\nrsa_bits = 3072\n\n'
        f'[output]\nname = "{name}"\ncompress = "zst"\n'
    )
    return recipe


def _built(arch: str, user_key: Path, tmp_path_factory: pytest.TempPathFactory, suite: str = "bookworm") -> Path:
    """out/ci-ARCH.img (ci-SUITE-ARCH.img) built by the real pipeline from the Debian base (once per session)."""
    from stages.build.pipeline import build
    from stages.core.recipe import load_recipe

    work = tmp_path_factory.mktemp(f"build-{suite}-{arch}")
    recipe = write_test_recipe(work, arch, user_key.with_suffix(".pub"), suite)
    with timed("build", recipe.stem):
        build(load_recipe(recipe), work / "out")
    return work / "out" / f"{recipe.stem}.img"


@pytest.fixture(scope="session")
def built_arm64(base_arm64: Path, user_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/ci-arm64.img, from the Debian arm64 base."""
    return _built("arm64", user_key, tmp_path_factory)


@pytest.fixture(scope="session")
def built_armhf(base_armhf: Path, user_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/ci-armhf.img: the legacy layout (boot partition at /boot)."""
    return _built("armhf", user_key, tmp_path_factory)


@pytest.fixture(scope="session")
def built_trixie_arm64(base_trixie_arm64: Path, user_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/ci-trixie-arm64.img, from the Raspberry Pi OS trixie-shaped base (shrunk)."""
    return _built("arm64", user_key, tmp_path_factory, "trixie")


# -- CI rules and the timing table -----------------------------------------------------------
# Under CI (CI=true) an integration or boot test that skips is a failure: CI installs every
# tool, so a skip there hides a check that never ran. At the end of every run a table shows
# where the time went (setup, base images, builds, each boot) and how many tests ran per marker.
SLOW_MARKERS = ("integration", "boot")
_timings: list[tuple[str, str, float]] = []  # (kind, name, seconds)
_counts: dict[str, dict[str, int]] = {}
_marker_seconds: dict[str, float] = {}  # every phase of every test, fixtures (base images, builds) included
_started = time.monotonic()


@contextlib.contextmanager
def timed(kind: str, name: str) -> Iterator[None]:
    """Add a row to the timing table (session fixtures: base images, builds)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        _timings.append((kind, name, time.monotonic() - t0))


def _marker(item: pytest.Item) -> str:
    return next((m for m in SLOW_MARKERS if item.get_closest_marker(m)), "unit")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = _marker(item)
    if report.skipped and marker in SLOW_MARKERS and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skipped {marker} test is a failure ({reason})"
    if call.when == "call" or (call.when == "setup" and not report.passed):  # one verdict per test
        counts = _counts.setdefault(marker, {})
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    if call.when == "call" and marker == "boot":
        _timings.append(("boot", item.name, call.duration))
    _marker_seconds[marker] = _marker_seconds.get(marker, 0.0) + report.duration


def _bases_seconds(log: str) -> float | None:
    """The seconds `invoke base-image --all` took beside the tests (.ci/run writes "SECONDS EXIT")."""
    try:
        return float(Path(log).read_text().split()[0]) if log else None
    except (OSError, ValueError, IndexError):
        return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tr = terminalreporter
    tr.section("entropi: tests per marker")
    for marker in ("unit", *SLOW_MARKERS):
        c = _counts.get(marker, {})
        tr.write_line(f"{marker:<12} ran {c.get('passed', 0) + c.get('failed', 0):>4}  passed {c.get('passed', 0):>4}"
                      f"  failed {c.get('failed', 0):>3}  skipped {c.get('skipped', 0):>3}")
    tr.section("entropi: timing")
    rows = []
    setup = os.environ.get("ENTROPI_SETUP_SECONDS")
    if setup:
        rows.append(("setup", "ci/setup", float(setup)))
    bases = _bases_seconds(os.environ.get("ENTROPI_BASES_LOG", ""))
    if bases is not None:
        rows.append(("base image", "--all: bookworm arm64 and armhf, trixie arm64, beside the tests", bases))
    rows += _timings
    for kind, name, seconds in rows:
        tr.write_line(f"{kind:<11} {name:<64} {seconds:>8.1f}s")
    for marker, seconds in sorted(_marker_seconds.items()):
        tr.write_line(f"{'tests':<11} {f'all {marker} tests, their fixtures included':<64} {seconds:>8.1f}s")
    tr.write_line(f"{'pytest':<11} {'whole run':<64} {time.monotonic() - _started:>8.1f}s")
