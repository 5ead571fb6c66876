"""Flash an image to an SD card (or an image file): safely, fast (bmap), verified by reading back.

    flash(image, /dev/sdX, ...)  -> refuse unsafe targets -> confirm -> write -> fsync
                                 -> read back and compare -> optional per-card hostname

With ``NAME.img.bmap`` beside the image, ``bmaptool copy`` writes only the mapped blocks
(compressed images too) and the mapped ranges are read back from the card and compared with
the block map's checksums. Without one, the whole (decompressed) image is streamed and the
SHA-256 of the written range read back from the card must equal the image's.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any

from stages.core import progress
from stages.core.checks import hostname_check
from stages.core.errors import UserError
from stages.core.files import tmp_name
from stages.core.processes import CommandFailed, forget, spawn
from stages.flash.bootfs import put_boot_files
from stages.flash.device import Device, human_size, inspect_device, open_exclusive, refuse_unsafe
from stages.flash.hostkeys import HostKeys, PublicKey, need_names, private_dir, put_host_keys
from stages.flash.known_hosts import record_on_host
from stages.flash.nocloud import Seed, plan_seed, put_seed
from stages.flash.source import CHUNK, Source, open_source, verify_bmap, verify_digest
from stages.source.compression import OutOfSpace, read_chunks, write_hashed

SYNC_EVERY = 64 << 20  # flush to the card this often, so the progress bar shows the card, not the cache
HOSTNAME_FILE = "entropi/hostname"  # on the boot partition; read by the first-boot unit
REFUSED_WRITE = "is the card locked? slide its lock switch to unlocked; if not, it is failing"


def flash(image: Path, target: Path, *, yes: bool, to_file: bool, force_non_removable: bool,
          hostname: str | None, sysfs: Path = Path("/sys"), mountinfo: Path = Path("/proc/self/mountinfo"),
          confirm: Callable[[str], bool] | None = None, host_keys: HostKeys | None = None,
          user_data: Path | None = None) -> dict[str, Any]:
    """Write ``image`` to the card ``target`` (or to the file ``target`` with ``to_file``) and verify it;
    with cloud-init in the image, the host name and ``user_data`` go into its seed (nocloud.py).

    Returns a report: bytes_written, seconds, method (bmap|full), verified, hostname, host_keys (fingerprints).
    Raises UserError (nothing written) for an unsafe or unsuitable target.
    """
    image, target = Path(image), Path(target)
    if hostname is not None and (bad := hostname_check(hostname)):
        raise UserError("flash", f"--hostname: {bad[0]}", hint=bad[1])
    if host_keys is not None:
        need_names([hostname])
    src = open_source(image)
    seed = plan_seed(src, [hostname], user_data)  # fails before writing; reads the image's boot partition
    if to_file:
        check_file_target(target, image)
    else:
        dev = inspect_device(target, sysfs)
        refuse_unsafe(dev, src.size, force_non_removable=force_non_removable, sysfs=sysfs, mountinfo=mountinfo)
        ask(dev, image, yes=yes, confirm=confirm)
        os.close(open_exclusive(target, os.O_RDONLY))  # the kernel's word: nothing has it claimed
    dest = tmp_name(target) if to_file else target
    start = time.monotonic()
    try:
        written, size, write_seconds = write_card(src, dest, hostname, sparse=to_file,
                                                  title=f"write {image.name} to {target}", seed=seed)
        keys = card_keys(host_keys, dest, hostname)
        if to_file:
            os.replace(dest, target)
    finally:
        if to_file and dest.exists():
            dest.unlink()
    report = {"image": str(image), "target": str(target), "method": "bmap" if src.bmap else "full",
              "image_bytes": size, "bytes_written": written, "write_seconds": round(write_seconds, 3),
              "seconds": round(time.monotonic() - start, 3), "verified": True, "hostname": hostname,
              "host_keys": [key.fingerprint for key in keys]}
    if host_keys is not None and hostname is not None:
        record_on_host(host_keys, {hostname: keys})
    progress.info(f"wrote {human_size(written)} of {human_size(size)} ({report['method']}) in "
                  f"{report['seconds']:.1f}s; read back and verified")
    return report


def write_card(src: Source, dest: Path, hostname: str | None, *, sparse: bool, title: str = "",
               meter: progress.Meter = progress.bar, seed: Seed | None = None) -> tuple[int, int, float]:
    """Write ``src`` to ``dest``, read it back, put the hostname (and with a ``seed``, cloud-init's seed with a
    fresh instance-id). -> (bytes written, image bytes, write seconds)

    With a ``title`` each part is a progress step; without one (cards written side by side, where
    only the bars of one board may be shown) the ``meter`` bars are all there is.
    """
    def step(name: str) -> AbstractContextManager[None]:
        return progress.step(name) if title else nullcontext()

    start = time.monotonic()
    with step(title):
        written, size, digest = (write_bmap(src, dest, meter) if src.bmap
                                 else write_full(src, dest, sparse=sparse, meter=meter))
    write_seconds = time.monotonic() - start
    with step("verify by reading back"):
        if src.bmap:
            verify_bmap(dest, src.bmap, meter)
        else:
            verify_digest(dest, size, digest, meter)
    if hostname is not None:
        with step(f"hostname {hostname}"):
            write_hostname(dest, hostname)
    if seed is not None:
        with step("cloud-init seed"):
            put_seed(dest, seed, hostname)
    return written, size, write_seconds


def card_keys(plan: HostKeys | None, dest: Path, hostname: str | None) -> tuple[PublicKey, ...]:
    """With --host-keys: the card's own keys, made in a private directory that is gone afterwards."""
    if plan is None or hostname is None:
        return ()
    with progress.step(f"host keys of {hostname}"), private_dir(plan.tmp_root) as tmp:
        return put_host_keys(plan, dest, hostname, tmp)


def check_file_target(target: Path, image: Path) -> None:
    """--to-file: the target must be a new or regular file in an existing directory, not the image."""
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISBLK(mode):
            raise UserError(str(target), "is a block device, and --to-file writes an image file",
                            hint="drop --to-file to flash the device")
        if not stat.S_ISREG(mode):
            raise UserError(str(target), "exists and is not a regular file", hint="give a file name for --to-file")
        if target.resolve() == image.resolve():
            raise UserError(str(target), "is the image itself", hint="give another file name")
    if not target.parent.is_dir():
        raise UserError(str(target), f"directory {target.parent} does not exist", hint="create it first")


def ask(dev: Device, image: Path, *, yes: bool, confirm: Callable[[str], bool] | None) -> None:
    """Show what the card is and ask before overwriting it, unless ``yes``."""
    prompt = (f"{dev.path}: {dev.describe()}\nwrite {image.name} to it? Everything on {dev.name} will be lost. "
              f"Type '{dev.name}' or 'yes' to go on: ")
    if yes:
        progress.info(f"{dev.path}: {dev.describe()}")
        return
    answers = ("yes", dev.name, str(dev.path), f"/dev/{dev.name}")
    if not (confirm or terminal_confirm(str(dev.path), answers))(prompt):
        raise UserError(str(dev.path), "not confirmed, nothing was written",
                        hint="type the device name or 'yes', or pass --yes")


def terminal_confirm(where: str, answers: Sequence[str]) -> Callable[[str], bool]:
    """Ask on the terminal; True when the answer is one of ``answers``. Without a terminal: refuse, never hang."""
    def ask_user(prompt: str) -> bool:
        if not sys.stdin.isatty():
            raise UserError(where, "cannot ask for confirmation (stdin is not a terminal)",
                            hint="pass --yes to write without asking")
        return progress.console.input(prompt).strip() in answers

    return ask_user


def write_bmap(src: Source, dest: Path, meter: progress.Meter = progress.bar) -> tuple[int, int, str]:
    """bmaptool copy: mapped blocks only; its own checksumming is skipped since we read the card back."""
    assert src.bmap is not None
    mapped = src.bmap.mapped_bytes
    argv = ["bmaptool", "-q", "copy", "--no-verify", "--bmap", str(src.bmap.path), str(src.path), str(dest)]
    with tempfile.TemporaryFile() as err:
        proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            with meter("write (bmap)", mapped) as bar:
                while proc.poll() is None:
                    bar.update(min(_written_by(proc.pid), mapped))
                    time.sleep(0.2)
                bar.update(mapped)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            forget(proc)
        if proc.returncode != 0:
            err.seek(0)
            lines = re.sub(r"\x1b\[[0-9;]*m", "", err.read().decode(errors="replace")).splitlines()
            _refused_write(dest, lines)
            raise CommandFailed(argv, proc.returncode, "\n".join([ln for ln in lines if "ERROR" in ln] or lines),
                                hint=f"is {src.path.name} complete, and does {src.bmap.path.name} belong to it?")
    return mapped, src.bmap.image_size, ""


def _refused_write(dest: Path, lines: list[str]) -> None:
    """bmaptool could open the card but not write it: the card's fault (locked, failing), not the image's."""
    for line in lines:
        if m := re.search(r"error while writing blocks (\S+) of .*\[Errno \d+\] (.+)", line):
            raise UserError(str(dest), f"cannot be written ({m[2].strip()} at blocks {m[1]})", hint=REFUSED_WRITE)


def _written_by(pid: int) -> int:
    """Bytes a process has written so far (/proc/PID/io wchar): bmaptool's progress without a tty."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def write_full(src: Source, dest: Path, *, sparse: bool,
               meter: progress.Meter = progress.bar) -> tuple[int, int, str]:
    """Stream the whole (decompressed) image; a file target skips zero blocks (sparse). -> (written, size, sha256)"""
    proc = spawn(src.decompress, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) if src.decompress else None
    reader: IO[bytes] = proc.stdout if proc and proc.stdout else open(src.path, "rb")
    fd = (os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if sparse
          else open_exclusive(dest, os.O_WRONLY))
    try:
        with meter("write (full)", src.size) as bar:
            pos, written, digest = write_hashed(read_chunks(reader, CHUNK), fd, sparse=sparse, advance=bar.advance,
                                                sync_every=0 if sparse else SYNC_EVERY)
    except OutOfSpace as e:  # the device ends before the image does
        if proc:
            proc.kill()
        raise UserError(str(dest), f"is too small: it ends at byte {e.at}", hint="use a larger card") from None
    except OSError as e:
        if proc:
            proc.kill()
        if e.errno in (errno.EPERM, errno.EROFS, errno.EIO) and not sparse:
            raise UserError(str(dest), f"cannot be written ({e.strerror})", hint=REFUSED_WRITE) from None
        raise
    except BaseException:
        if proc:
            proc.kill()
        raise
    finally:
        os.close(fd)
        reader.close()
        if proc:
            _reap(proc, src)
    if src.size is not None and pos != src.size:
        raise UserError(str(src.path), f"decompressed to {pos} bytes, expected {src.size}", hint="is it truncated?")
    return written, pos, digest


def _reap(proc: subprocess.Popen[bytes], src: Source) -> None:
    """Wait for the decompressor; a failure (not our own kill) is shown with its stderr."""
    stderr = proc.stderr.read() if proc.stderr else b""
    proc.wait()
    forget(proc)
    if proc.returncode not in (0, -9):
        raise CommandFailed(src.decompress or [], proc.returncode, stderr.decode(errors="replace"),
                            hint=f"is {src.path.name} complete and not corrupt?")


def write_hostname(target: Path, hostname: str) -> None:
    """Put ``hostname`` into <boot partition>/entropi/hostname (FAT partition 1, via mtools) and read it back."""
    put_boot_files(target, {HOSTNAME_FILE: hostname + "\n"})
