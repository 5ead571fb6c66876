"""firstboot/entropi-tpm-feed: what it asks the TPM and what it credits the kernel."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path
from types import ModuleType

import pytest

from firstboot.tests.helpers import load_script

PROGRAM = Path(__file__).resolve().parents[1] / "entropi-tpm-feed"


def load() -> ModuleType:
    return load_script(PROGRAM)


class FakeTpm:
    """The far end of a socket pair that answers TPM2_GetRandom like a TPM 2.0 (at most 32 bytes)."""

    def __init__(self, fail_after: int = -1) -> None:
        self.near, self.far = socket.socketpair()
        self.requests: list[int] = []
        self.fail_after = fail_after
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            cmd = self.far.recv(4096)
            if not cmd:
                return
            tag, size, code, wanted = struct.unpack(">HIIH", cmd)
            assert (tag, size, code) == (0x8001, 12, 0x17B)
            self.requests.append(wanted)
            if len(self.requests) == self.fail_after:
                self.far.sendall(struct.pack(">HII", 0x8001, 10, 0x101))
                continue
            data = bytes([len(self.requests)]) * min(wanted, 32)
            self.far.sendall(struct.pack(">HIIH", 0x8001, 12 + len(data), 0, len(data)) + data)

    def close(self) -> None:
        self.near.close()  # the server thread reads EOF and returns before its socket is closed
        self.thread.join(timeout=5)
        self.far.close()


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, list[tuple[int, bytes]]]:
    module = load()
    credited: list[tuple[int, bytes]] = []
    monkeypatch.setattr(module, "credit", lambda fd, data: credited.append((fd, data)))
    return module, credited


def test_first_feed_asks_the_tpm_in_chunks_and_credits_every_byte(feed) -> None:
    module, credited = feed
    tpm = FakeTpm()
    try:
        feeder = module.Feeder(tpm.near.fileno(), 99, clock=lambda: 1.5)
        assert feeder.feed(module.FIRST_BYTES) == 64
    finally:
        tpm.close()
    assert tpm.requests == [32, 32]
    assert [(fd, len(data)) for fd, data in credited] == [(99, 32), (99, 32)]
    assert feeder.record["bytes"] == 64 and feeder.record["credited_bits"] == 512
    assert feeder.record["reads"] == 2 and feeder.record["first_at"] == 1.5


def test_a_tpm_error_is_counted_and_nothing_is_credited_for_it(feed) -> None:
    module, credited = feed
    tpm = FakeTpm(fail_after=2)
    try:
        feeder = module.Feeder(tpm.near.fileno(), 99)
        assert feeder.feed(64) == 32
    finally:
        tpm.close()
    assert len(credited) == 1
    assert feeder.record["errors"] == 1 and "rc 0x101" in feeder.record["last_error"]


def test_credit_passes_rand_pool_info_with_eight_bits_a_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load()
    calls = []
    monkeypatch.setattr(module.fcntl, "ioctl", lambda fd, req, arg: calls.append((fd, req, arg)))
    module.credit(7, b"abcde")
    fd, req, arg = calls[0]
    assert (fd, req) == (7, 0x40085203)
    assert struct.unpack_from("ii", arg) == (40, 5) and arg[8:] == b"abcde\0\0\0"


def test_no_tpm_is_recorded_and_the_program_exits_cleanly(feed, tmp_path: Path, monkeypatch) -> None:
    module, _ = feed
    monkeypatch.setattr(module, "TPM", str(tmp_path / "tpmrm0"))
    monkeypatch.setattr(module, "RECORD", str(tmp_path / "record.json"))
    monkeypatch.setattr(module, "WAIT_FOR_TPM", 0)
    assert module.main(sleep=lambda s: None) == 0
    assert '"present": false' in (tmp_path / "record.json").read_text()
    assert not os.path.exists(tmp_path / "record.json.tmp")
