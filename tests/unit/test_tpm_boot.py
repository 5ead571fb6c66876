"""boot-test --tpm without a boot: the host's counters, the checks T1-T4, the refusal."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stages.boottest.hostcount import EgdServer, TpmRelay, random_bytes_in, read_frame
from stages.boottest.tpm import refuse_unless_debian_arm64
from stages.boottest.tpm_checks import judge
from stages.boottest.virt import virt_cmdline
from stages.core.errors import UserError


def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "the server thread did not get there"
        time.sleep(0.01)


def test_egd_server_answers_each_request_and_counts_the_bytes(tmp_path: Path) -> None:
    server = EgdServer(tmp_path / "egd.sock")
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(tmp_path / "egd.sock"))
            c.sendall(bytes([2, 64, 2, 255, 2, 1]))
            got = b""
            while len(got) < 320:
                got += c.recv(4096)
        wait_until(lambda: server.requests == 3)
    finally:
        server.close()
    assert len(got) == 320 and server.delivered == 320 and not server.error


class FakeSwtpm:
    """A Unix socket that answers every TPM command; GetRandom with 32 bytes, others with rc 0."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(1)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while (cmd := read_frame(conn)) is not None:
                if struct.unpack_from(">I", cmd, 6)[0] == 0x17B:
                    conn.sendall(struct.pack(">HIIH", 0x8001, 44, 0, 32) + os.urandom(32))
                else:
                    conn.sendall(struct.pack(">HII", 0x8001, 10, 0))

    def close(self) -> None:
        self.sock.close()


def test_tpm_relay_forwards_commands_and_counts_getrandom_bytes(tmp_path: Path) -> None:
    swtpm = FakeSwtpm(tmp_path / "swtpm.sock")
    relay = TpmRelay(tmp_path / "relay.sock", tmp_path / "swtpm.sock")
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(tmp_path / "relay.sock"))
            for cmd in (struct.pack(">HIIH", 0x8001, 12, 0x144, 0), struct.pack(">HIIH", 0x8001, 12, 0x17B, 32),
                        struct.pack(">HIIH", 0x8001, 12, 0x17B, 32)):
                c.sendall(cmd)
                assert read_frame(c) is not None
        wait_until(lambda: relay.summary()["commands"] == 3)
    finally:
        relay.close()
        swtpm.close()
    assert relay.summary()["random_bytes"] == 64 and relay.summary()["get_random_commands"] == 2


def test_random_bytes_in_skips_the_parameter_size_of_a_session_response_and_errors() -> None:
    assert random_bytes_in(struct.pack(">HIIIH", 0x8002, 48, 0, 34, 32) + bytes(32)) == 32
    assert random_bytes_in(struct.pack(">HII", 0x8001, 10, 0x101)) == 0


def probe(**changes: Any) -> dict[str, Any]:
    """What the probe printed in a boot of an image built with hwrng.tpm (after the feeder)."""
    record: dict[str, Any] = {
        "rng_available": ["virtio_rng.0", "tpm-rng-0"], "rng_current": "virtio_rng.0", "tpm_chips": ["tpm0"],
        "tpmrm0": {"path": "/dev/tpmrm0", "answers": True, "rc": 0, "manufacturer": "IBM"},
        "rngd": [{"pid": 300, "devices": ["/dev/hwrng", "/dev/random"], "rchar": 4096}],
        "feeder": {"bytes": 64, "credited_bits": 512, "reads": 2},
        "units": {"trousers.service": {"LoadState": "masked", "ActiveState": "inactive"}}, "tcsd_running": False}
    record.update(changes)
    return record


COUNTS = {"virtio-rng": {"delivered_bytes": 4096}, "tpm": {"random_bytes": 64}}


def results(probe_record: dict[str, Any], counts: dict[str, Any] = COUNTS) -> dict[str, bool]:
    return {c["id"]: c["passed"] for c in judge(probe_record, counts)}


def test_an_image_with_the_tpm_feeder_passes_every_check() -> None:
    assert results(probe()) == {"T1": True, "T2": True, "T3": True, "T4": True}


def test_without_the_tpm_setting_the_tpm_delivers_nothing_and_only_t3_fails() -> None:
    counts = {"virtio-rng": {"delivered_bytes": 4096}, "tpm": {"random_bytes": 0}}
    checks = judge(probe(feeder=None), counts)
    assert {c["id"]: c["passed"] for c in checks} == {"T1": True, "T2": True, "T3": False, "T4": True}
    assert "the TPM delivered 0 random bytes, taken by nobody" in checks[2]["detail"]


def test_a_feeder_claiming_more_than_the_host_counted_fails_t3() -> None:
    counts = {"virtio-rng": {"delivered_bytes": 4096}, "tpm": {"random_bytes": 32}}
    assert results(probe(), counts)["T3"] is False


def test_a_tpm_made_current_starves_the_board_rng_and_fails_t3() -> None:
    counts = {"virtio-rng": {"delivered_bytes": 0}, "tpm": {"random_bytes": 4096}}
    assert results(probe(rng_current="tpm-rng-0", feeder=None), counts)["T3"] is False


def test_a_running_tcsd_fails_t4_and_a_missing_tpm_fails_t1_and_t2() -> None:
    assert results(probe(tcsd_running=True))["T4"] is False
    no_tpm = probe(rng_available=["virtio_rng.0"], tpm_chips=[], tpmrm0={"answers": False, "error": "No such file"})
    assert results(no_tpm)["T1"] is False and results(no_tpm)["T2"] is False


@pytest.mark.parametrize("manifest", [{}, {"settings": {"base": {"source": "release"}}, "image": {"arch": "arm64"}},
                                      {"settings": {"base": {"source": "debian"}}, "image": {"arch": "armhf"}}])
def test_tpm_boot_refuses_images_not_built_from_debian_for_arm64(manifest: dict[str, Any]) -> None:
    with pytest.raises(UserError, match=r"--tpm boots only Debian-built arm64 images"):
        refuse_unless_debian_arm64(Path("out/x.img"), manifest)


def test_virt_cmdline_keeps_root_and_uses_the_pl011_console() -> None:
    line = virt_cmdline("console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootwait quiet")
    assert line == "root=PARTUUID=1234abcd-02 rootwait console=ttyAMA0,115200 net.ifnames=0"
