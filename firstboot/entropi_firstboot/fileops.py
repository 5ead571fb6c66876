"""Durable file operations, each counted for fault injection (tests/test_firstboot_crash.py)."""

from __future__ import annotations

import errno
import os
import sys
from typing import Optional

from . import log, seams
from .device import TMP_PREFIX

FAULT_ENV = "ENTROPI_FIRSTBOOT_FAULT_AFTER"
FAULT_EXIT = 99


class FileOps:
    """Every write/fsync/rename/unlink/chmod goes through here.

    With ENTROPI_FIRSTBOOT_FAULT_AFTER=N the process dies (exit 99) right after
    the N-th operation, to prove that a reset at any instant is recovered.
    """

    def __init__(self, fault_after: Optional[int]) -> None:
        self.count = 0
        self.fault_after = fault_after
        self.counting = True

    @classmethod
    def from_environment(cls) -> "FileOps":
        fault = os.environ.get(FAULT_ENV)
        return cls(int(fault) if fault else None)

    def tick(self, what: str) -> None:
        if not self.counting:
            return
        self.count += 1
        if self.fault_after is not None and self.count >= self.fault_after:
            log("fault injected after file operation %d: %s" % (self.count, what))
            sys.stdout.flush()
            os._exit(FAULT_EXIT)

    def fsync_path(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.tick("fsync " + path)

    def fsync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # some file systems refuse fsync on a directory
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
        finally:
            os.close(fd)
        self.tick("fsync dir " + path)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        """Make ``path`` and its missing parents; each new directory's entry is made durable
        by fsyncing the directory that holds it."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path.rstrip("/"))
        if parent and parent != path:
            self.makedirs(parent, mode)
        os.mkdir(path, mode)
        self.tick("mkdir " + path)
        self.fsync_dir(parent or "/")

    def unlink(self, path: str) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        self.tick("unlink " + path)
        return True

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)
        self.tick("rename %s -> %s" % (src, dst))

    def chmod(self, path: str, mode: int) -> None:
        if (os.stat(path).st_mode & 0o7777) != mode:
            os.chmod(path, mode)
            self.tick("chmod " + path)

    def write_atomic(self, path: str, data: str, mode: int = 0o644) -> None:
        """Write to a temporary name, fsync, rename over path, fsync the directory and the file."""
        directory = os.path.dirname(path)
        self.makedirs(directory)
        tmp = os.path.join(directory, TMP_PREFIX + os.path.basename(path) + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            try:
                write_all(fd, data.encode("utf-8"), tmp)
                self.tick("write " + tmp)
                try:
                    os.fchmod(fd, mode)
                except OSError:  # vfat has no modes
                    pass
                os.fsync(fd)
                self.tick("fsync " + tmp)
            finally:
                os.close(fd)
        except OSError:
            # A short or failed write (a full or read-only partition) never replaces the
            # good file: the temporary one goes, the old one stays.
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.rename(tmp, path)
        # vfat (the boot partition) writes a renamed file's size and first cluster into its
        # new directory entry only when the file's inode is written back (30 s later): fsync
        # under the new name writes that entry now, and must come before the directory's
        # fsync. The other way round, the directory's fsync made the new entry durable still
        # empty (a new file) or still naming the old file's clusters, already freed (a
        # replaced one: unreadable), until the file's fsync: a power cut between them left it
        # torn (tests/integration/test_power_cut.py found both). On ext4 the file's fsync
        # commits the rename too.
        self.fsync_path(path)
        self.fsync_dir(directory)


def write_all(fd: int, data: bytes, name: str) -> None:
    """Write every byte of ``data``: os.write may write fewer than asked (a signal, a nearly
    full file system); a write that makes no progress raises instead of looping forever."""
    view = memoryview(data)
    while view:
        written = seams.write(fd, view)
        if not written or written < 0:
            raise OSError(errno.EIO, "short write: %d of %d bytes written" % (len(data) - len(view), len(data)),
                          name)
        view = view[written:]
