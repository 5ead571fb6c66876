"""Several cards at once, the parts that need no device: host names, the question, the table, the refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stages.core.errors import UserError
from stages.flash.device import Device
from stages.flash.fleet import CardResult, Refused, confirm_all, hostnames, table


def card(name: str, serial: str = "1234") -> Device:
    return Device(path=Path(f"/dev/{name}"), name=name, size=32 << 30, removable=True, read_only=False,
                  partition=False, model="Generic SD/MMC", serial=serial, transport="usb")


@pytest.mark.parametrize("spec,count,first,names", [
    ("pi-{n:02}", 3, 1, ["pi-01", "pi-02", "pi-03"]),
    ("pi-{n:02}", 2, 9, ["pi-09", "pi-10"]),
    ("lab{n}", 2, 0, ["lab0", "lab1"]),
    ("kitchen, hall,garage", 3, 1, ["kitchen", "hall", "garage"]),
    ("pi-07", 1, 1, ["pi-07"]),
    ("", 2, 1, [None, None]),
])
def test_hostnames_from_a_pattern_of_n_or_a_list(spec: str, count: int, first: int, names: list[str | None]) -> None:
    assert hostnames(spec, count, first) == names


@pytest.mark.parametrize("spec,count,pattern", [
    ("a,b", 3, r"^error: flash: --hostname names 2 card\(s\) for 3 device\(s\) \(hint: give one name per --device"),
    ("pi", 2, r"--hostname names 1 card\(s\) for 2 device\(s\) .*pi-\{n:02\}"),
    ("pi-{x}", 2, r"--hostname 'pi-\{x\}' is not a pattern of n \(KeyError: 'x'\) \(hint: write the card's number as"),
    ("pi-{}", 2, r"--hostname 'pi-\{\}' is not a pattern of n \(IndexError"),
    ("pi-{n:q}", 2, r"is not a pattern of n \(ValueError"),
    ("pi-{n", 2, r"is not a pattern of n \(ValueError"),
    ("pi_{n}", 2, r"--hostname: not a valid hostname: 'pi_1' \(hint: use letters, digits and '-'"),
    ("a,b,a", 3, r"--hostname gives 'a' to two cards \(hint: give every card its own name\)"),
    ("a,,c", 3, r"not a valid hostname: ''"),
])
def test_bad_hostnames_are_one_line_errors(spec: str, count: int, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern) as err:
        hostnames(spec, count)
    assert "\n" not in err.value.render()


def test_the_table_lists_every_card_and_then_each_failure() -> None:
    results = [CardResult("/dev/sdb", "0001", "pi-01", 301989888, 12.34, True),
               CardResult("/dev/sdc", "", "pi-02", 0, 0.5, False,
                          "error: /dev/sdc: cannot be written (Operation not permitted) (hint: is the card locked?)"),
               CardResult("/dev/mmcblk0", "0xdeadbeef", None, 301989888, 20.0, True)]
    assert table(results).splitlines() == [
        "device        serial      host name  bytes      seconds  verified",
        "/dev/sdb      0001        pi-01      301989888  12.3     yes",
        "/dev/sdc      unknown     pi-02      0          0.5      FAILED",
        "/dev/mmcblk0  0xdeadbeef  -          301989888  20.0     yes",
        "2 of 3 card(s) written and verified, 1 failed:",
        "error: /dev/sdc: cannot be written (Operation not permitted) (hint: is the card locked?)",
    ]
    assert table(results[:1]).splitlines()[-1] == "1 of 1 card(s) written and verified"


def test_refusals_are_one_line_each_and_then_that_nothing_was_written() -> None:
    refused = Refused([UserError("/dev/sdb", "is mounted (sdb1 at /media/x)", hint="unmount it first: umount /media/x"),
                       UserError("/dev/sdd", "is read-only", hint="slide the SD card's lock switch to unlocked")], 3)
    assert refused.render().splitlines() == [
        "error: /dev/sdb: is mounted (sdb1 at /media/x) (hint: unmount it first: umount /media/x)",
        "error: /dev/sdd: is read-only (hint: slide the SD card's lock switch to unlocked)",
        "error: flash: 2 of 3 devices refused, nothing was written (hint: fix or leave out the devices above, then "
        "run again)"]
    assert refused.exit_code == 2


def test_one_question_lists_every_card_with_its_name_and_only_yes_goes_on(tmp_path: Path) -> None:
    cards: list[tuple[Device, str | None]] = [(card("sdb", "0001"), "pi-01"), (card("sdc", "0002"), "pi-02")]
    seen: list[str] = []

    def answer(reply: bool) -> Callable[[str], bool]:
        return lambda prompt: seen.append(prompt) is None and reply

    confirm_all(cards, tmp_path / "x.img", yes=False, confirm=answer(True))
    assert seen[0].splitlines() == [
        "write x.img to 2 card(s); everything on them will be lost:",
        "  /dev/sdb: Generic SD/MMC, 34.4 GB (32.00 GiB), serial 0001, usb, removable -> pi-01",
        "  /dev/sdc: Generic SD/MMC, 34.4 GB (32.00 GiB), serial 0002, usb, removable -> pi-02",
        "Type 'yes' to go on: "]
    with pytest.raises(UserError, match=r"^error: flash: not confirmed, nothing was written \(hint: type 'yes'"):
        confirm_all(cards, tmp_path / "x.img", yes=False, confirm=answer(False))
    confirm_all(cards, tmp_path / "x.img", yes=True, confirm=answer(False))  # --yes never asks
    assert len(seen) == 2


def test_without_a_terminal_the_question_asks_for_yes_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UserError, match=r"^error: flash: cannot ask for confirmation .* \(hint: pass --yes"):
        confirm_all([(card("sdb"), None)], tmp_path / "x.img", yes=False, confirm=None)
