"""stages.image.guest: which kernel a TCG appliance boots (the host kernel unpacked, PVH entry)."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest

from stages.image.guest import XEN_ELFNOTE_PHYS32_ENTRY, has_pvh_entry, host_kernel, unpack_kernel


def elf_with_note(name: bytes, ntype: int, elf_class: int = 2) -> bytes:
    """A minimal 64-bit ELF: header, one PT_NOTE program header, one note."""
    desc = struct.pack("<I", 0x1000000)
    padded = name + b"\0" * (-len(name) % 4)
    note = struct.pack("<III", len(name), len(desc), ntype) + padded + desc
    phoff, note_off = 64, 64 + 56
    header = bytearray(64)
    header[:6] = b"\x7fELF" + bytes([elf_class, 1])
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note


def test_pvh_note_found() -> None:
    assert has_pvh_entry(elf_with_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY))


@pytest.mark.parametrize("elf", [
    elf_with_note(b"Xen\0", 17),                                  # another Xen note
    elf_with_note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY),            # same type, other owner
    elf_with_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, elf_class=1),  # 32-bit ELF
    b"MZ" + bytes(100),                                           # not an ELF
])
def test_no_pvh_entry(elf: bytes) -> None:
    assert not has_pvh_entry(elf)


def test_unpack_finds_the_xz_stream_after_the_setup_code() -> None:
    elf = elf_with_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY)
    bzimage = b"\x90" * 4096 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0\0\x10\x00trailer"
    assert unpack_kernel(bzimage) == elf


@pytest.mark.parametrize("bzimage", [
    b"\x90" * 4096,                                                       # no xz stream
    b"\x90" * 16 + lzma.compress(b"\x7fELF" + bytes(200), format=lzma.FORMAT_XZ),  # ELF, no PVH
    b"\x90" * 16 + lzma.compress(bytes(4096), format=lzma.FORMAT_XZ)[:40],         # cut short
])
def test_unpack_refuses(bzimage: bytes) -> None:
    assert unpack_kernel(bzimage) is None


def test_host_kernel_unpacks_to_a_pvh_elf() -> None:
    """The kernel libguestfs boots here (Debian's, xz-compressed) gives a bootable ELF."""
    kernel = host_kernel()
    assert kernel is not None and Path("/lib/modules", kernel.name.removeprefix("vmlinuz-")).is_dir()
    data = kernel.read_bytes()
    if b"\xfd7zXZ\x00" not in data:
        pytest.skip(f"{kernel} is not xz-compressed; the appliance boots it as packaged")
    elf = unpack_kernel(data)
    assert elf is not None and elf[:4] == b"\x7fELF" and len(elf) > 4 * len(data)
