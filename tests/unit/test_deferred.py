"""stages/source/deferred.py: the commands diverted to stubs while mmdebstrap installs, run once after."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stages.source import deferred


def _essential_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/diversions").write_text("/usr/bin/dpkg\n/usr/bin/dpkg.distrib\n:\n")
    subprocess.run(["sh", "-ec", deferred.essential_hook(), "hook", str(root)], check=True)
    return root


def test_essential_hook_diverts_each_command_to_a_stub_that_does_nothing(tmp_path: Path) -> None:
    root = _essential_root(tmp_path)
    lines = (root / "var/lib/dpkg/diversions").read_text().splitlines()
    entries = [tuple(lines[i:i + 3]) for i in range(0, len(lines), 3)]
    assert entries[0] == ("/usr/bin/dpkg", "/usr/bin/dpkg.distrib", ":")  # what was there is kept
    assert entries[1:] == [(d.path, d.diverted, ":") for d in deferred.DEFERRED]
    for d in deferred.DEFERRED:
        assert subprocess.run([str(root / d.path.lstrip("/")), "-u"]).returncode == 0


def test_update_initramfs_stub_answers_version_from_the_real_command(tmp_path: Path) -> None:
    stub = next(d for d in deferred.DEFERRED if d.path.endswith("/update-initramfs")).stub
    assert 'exec /usr/sbin/update-initramfs.entropi-deferred "$@"' in stub
    assert stub.startswith("#!/bin/sh\n[ \"$1\" = --version ]")


def test_customize_hooks_restore_every_command_before_running_any_and_make_the_initramfs_last() -> None:
    hooks = deferred.customize_hooks()
    n = len(deferred.DEFERRED)
    assert all("dpkg-divert --local --rename --remove" in h for h in hooks[:n])
    assert hooks[n:] == [f'chroot "$1" {d.final}' for d in deferred.DEFERRED]
    assert hooks[-1] == 'chroot "$1" update-initramfs -c -k all'


def test_mmdebstrap_options_are_the_hooks_and_unsafe_io_without_eatmydata() -> None:
    options = deferred.mmdebstrap_options()
    assert options[0] == "--dpkgopt=force-unsafe-io"
    assert options[1:] == [f"--customize-hook={h}" for h in deferred.customize_hooks()]
    assert not any("eatmydata" in o for o in options)
