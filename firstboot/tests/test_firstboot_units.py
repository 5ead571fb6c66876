"""The first-boot unit and its ssh@.service drop-in, judged by systemd itself.

`systemd-analyze verify --root` loads a card's root that holds the unit and the drop-in,
enabled as the build enables them (stages.image.units: the [Install] links), stubs of
Debian's ssh.service, ssh.socket (Accept=yes) and ssh@.service, an rng daemon with default
dependencies, cloud-init's network stage as Debian's units order it, and the host's targets.

Orderings are proven with cycles: systemd reports "Found ordering cycle" only when the
orderings it was given close a loop. A probe ordered after an sshd unit and before the guard
closes one exactly when that sshd unit pulls the guard in and starts after it; no loop, no
such ordering (the negative controls show the test can tell).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from firstboot.tests.helpers import PROGRAM
from stages.image.units import install_targets

FIRSTBOOT = PROGRAM.parent
UNIT = "entropi-firstboot.service"
DROPIN = FIRSTBOOT / "entropi-firstboot-ssh@.conf"
HOST_UNITS = Path("/lib/systemd/system")

STUBS = {
    "ssh.service": "[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\n"
                   "[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n"
                   "Alias=sshd.service\n",
    "ssh.socket": "[Unit]\nDescription=OpenBSD Secure Shell server socket\nBefore=sockets.target\n"
                  "[Socket]\nListenStream=22\nAccept=yes\n[Install]\nWantedBy=sockets.target\n",
    "ssh@.service": "[Unit]\nDescription=OpenBSD Secure Shell server per-connection daemon\n"
                    "After=auditd.service\n[Service]\nExecStart=-/usr/sbin/sshd -i\nStandardInput=socket\n",
    # rng-tools5's rngd.service: default dependencies, so after basic.target and sockets.target.
    "rngd.service": "[Unit]\nDescription=Hardware RNG Entropy Gatherer Daemon\n"
                    "[Service]\nExecStart=/usr/sbin/rngd -f\n[Install]\nWantedBy=multi-user.target\n",
    # cloud-init's network stage as its template renders for debian and raspberry-pi-os.
    "cloud-init-network.service": "[Unit]\nDescription=Cloud-init: Network Stage\nDefaultDependencies=no\n"
                                  "After=networking.service\nBefore=network-online.target\n"
                                  "Before=sshd-keygen.service\nBefore=sshd.service\nBefore=sysinit.target\n"
                                  "Before=shutdown.target\nConflicts=shutdown.target\n"
                                  "[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init init\n"
                                  "RemainAfterExit=yes\n[Install]\nWantedBy=multi-user.target\n",
}
PROGRAMS = ("/usr/sbin/sshd", "/usr/sbin/rngd", "/usr/bin/cloud-init")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is missing (package systemd)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true: " + reason)
        pytest.skip(reason)
    return found


def card(tmp_path: Path, unit_text: str | None = None, dropin: bool = True) -> Path:
    """A root with the units installed and enabled as the build does it."""
    root = tmp_path / "root"
    lib, etc = root / "usr/lib/systemd/system", root / "etc/systemd/system"
    lib.mkdir(parents=True)
    etc.mkdir(parents=True)
    for target in HOST_UNITS.glob("*.target"):  # the host's targets: their real dependencies
        shutil.copy(str(target), str(lib / target.name), follow_symlinks=True)
    for name, text in STUBS.items():
        (lib / name).write_text(text)
    for program in ("/usr/lib/entropi/entropi-guard", "/usr/lib/entropi/entropi-firstboot", *PROGRAMS):
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    text = unit_text if unit_text is not None else (FIRSTBOOT / UNIT).read_text()
    (etc / UNIT).write_text(text)
    if dropin:
        (etc / "ssh@.service.d").mkdir()
        shutil.copy(str(DROPIN), str(etc / "ssh@.service.d/entropi-firstboot.conf"))
    links = [(t, k, f"/etc/systemd/system/{UNIT}", UNIT) for t, k in install_targets(text)]
    links += [("multi-user.target", "wants", f"/usr/lib/systemd/system/{n}", n)
              for n in ("ssh.service", "rngd.service", "cloud-init-network.service")]
    links += [("sockets.target", "wants", "/usr/lib/systemd/system/ssh.socket", "ssh.socket")]
    for target, kind, path, name in links:
        (etc / f"{target}.{kind}").mkdir(exist_ok=True)
        os.symlink(path, str(etc / f"{target}.{kind}" / name))
    return root


def verify(root: Path, *units: str) -> str:
    res = subprocess.run([systemd_analyze(), "verify", f"--root={root}", *units],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def probe(root: Path, sshd: str) -> str:
    """verify a target that starts ``sshd`` and a probe ordered after it and before the guard."""
    lib = root / "usr/lib/systemd/system"
    (lib / "probe.service").write_text(f"[Unit]\nDefaultDependencies=no\nAfter={sshd}\nBefore={UNIT}\n"
                                       "[Service]\nType=oneshot\nExecStart=/usr/sbin/sshd -t\n")
    (lib / "probe.target").write_text(f"[Unit]\nWants=probe.service {sshd}\n")
    return verify(root, "probe.target")


def cycle_through_guard(output: str) -> bool:
    return "ordering cycle" in output and UNIT in output


def test_the_units_load_cleanly_and_a_boot_with_socket_activation_and_rngd_has_no_ordering_cycle(tmp_path):
    output = verify(card(tmp_path), "multi-user.target", "ssh@1.service", UNIT, "ssh.socket")

    assert "cycle" not in output, output
    assert "entropi" not in output, output


@pytest.mark.parametrize("sshd", ["ssh.service", "ssh@1.service"])
def test_sshd_and_every_socket_activated_instance_pull_in_the_guard_and_start_after_it(tmp_path, sshd):
    assert cycle_through_guard(probe(card(tmp_path), sshd))


def test_negative_control_without_the_dropin_an_instance_is_not_ordered_after_the_guard(tmp_path):
    assert not cycle_through_guard(probe(card(tmp_path, dropin=False), "ssh@1.service"))


def test_negative_control_before_ssh_at_in_the_unit_does_not_reach_the_instances(tmp_path):
    text = (FIRSTBOOT / UNIT).read_text().replace("\nBefore=ssh.service sshd.service\n",
                                                  "\nBefore=ssh.service sshd.service ssh@.service\n")
    assert "ssh@.service\n" in text
    assert not cycle_through_guard(probe(card(tmp_path, text, dropin=False), "ssh@1.service"))


def test_negative_control_before_ssh_socket_would_be_an_ordering_cycle_with_rngd(tmp_path):
    """Why the unit is not ordered before ssh.socket: the socket comes before sockets.target
    and basic.target, which an rng daemon with default dependencies comes after."""
    text = (FIRSTBOOT / UNIT).read_text().replace("\nBefore=ssh.service sshd.service\n",
                                                  "\nBefore=ssh.service sshd.service ssh.socket\n")
    output = verify(card(tmp_path, text), "multi-user.target")

    assert "ordering cycle" in output and "rngd.service" in output and "ssh.socket" in output, output


def unit_settings(text: str) -> dict:
    settings: dict = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key), []).extend(value.split())
    return settings


def test_the_guard_runs_every_boot_after_every_key_maker_and_before_sshd():
    s = unit_settings((FIRSTBOOT / UNIT).read_text())
    assert ("Unit", "ConditionPathExists") not in s, "no stand-down: the guard runs at every boot"
    assert s[("Unit", "DefaultDependencies")] == ["no"]
    for before in ("ssh.service", "sshd.service"):
        assert before in s[("Unit", "Before")]
    for after in ("local-fs.target", "rngd.service", "rng-tools.service", "rng-tools-debian.service",
                  "systemd-random-seed.service", "regenerate_ssh_host_keys.service", "sshd-keygen.service",
                  "cloud-init.service", "cloud-init-network.service"):
        assert after in s[("Unit", "After")]
    assert "sysinit.target" not in s[("Unit", "Before")], "would be an ordering cycle with rngd"
    assert s[("Service", "Type")] == ["oneshot"]
    assert s[("Service", "RemainAfterExit")] == ["yes"]
    assert s[("Service", "ExecStart")] == ["/usr/lib/entropi/entropi-guard"]
    assert s[("Service", "StandardOutput")] == ["journal+console"]
    assert s[("Install", "RequiredBy")] == ["ssh.service", "ssh@.service"]
    assert s[("Install", "WantedBy")] == ["multi-user.target"]
    assert unit_settings(DROPIN.read_text())[("Unit", "After")] == [UNIT]
