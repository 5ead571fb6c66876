"""A directory-backed stand-in for a libguestfs handle (stages.image.handle.GuestHandle).

Each partition is a directory on the host; ``mount`` places it in the guest's tree as
libguestfs does, so guest paths like /boot/firmware/config.txt land in the boot directory.
Symbolic links are resolved inside the image (an absolute target starts at the guest's /),
and is_dir/is_file do not follow a final link unless asked, as in libguestfs. Ownership
cannot be changed without root, so chown/lchown are recorded in ``owners``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
from pathlib import Path

MAX_LINKS = 40


class FakeGuest:
    """GuestHandle over directories: ``devices`` maps /dev/sdaN to the partition's directory."""

    def __init__(self, devices: dict[str, Path]) -> None:
        self.devices = devices
        self.mounts: dict[str, Path] = {}
        self.owners: dict[str, tuple[int, int]] = {}
        self.calls: list[str] = []  # session calls (mount, drop_caches, umount_all, shutdown, close)

    @classmethod
    def image(cls, top: Path, boot_mount: str = "/boot/firmware") -> FakeGuest:
        """A fake image under ``top`` (top/root, top/boot), both partitions mounted."""
        root, boot = top / "root", top / "boot"
        (root / boot_mount.lstrip("/")).mkdir(parents=True, exist_ok=True)
        boot.mkdir(parents=True, exist_ok=True)
        g = cls({"/dev/sda2": root, "/dev/sda1": boot})
        g.mount("/dev/sda2", "/")
        g.mount("/dev/sda1", boot_mount)
        return g

    # -- path mapping -------------------------------------------------------------------
    def host(self, path: str) -> Path:
        """Where guest ``path`` (no links followed) lives on the host."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        best = max((m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")),
                   key=len, default=None)
        if best is None:
            raise RuntimeError(f"{path}: nothing is mounted there")
        rel = path[len(best):].lstrip("/")
        return self.mounts[best] / rel if rel else self.mounts[best]

    def resolve(self, path: str, follow: bool = True) -> str:
        """``path`` with its links resolved inside the image (the last one only if ``follow``)."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        cur, hops = "/", 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                cur = posixpath.dirname(cur)
                continue
            nxt = posixpath.join(cur, name)
            host = self.host(nxt)
            if host.is_symlink() and (parts or follow):
                hops += 1
                if hops > MAX_LINKS:
                    raise RuntimeError(f"{path}: too many levels of symbolic links")
                target = os.readlink(host)
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                cur = "/" if target.startswith("/") else cur
                continue
            cur = nxt
        return cur

    def _at(self, path: str, follow: bool = True) -> Path:
        return self.host(self.resolve(path, follow))

    def _lstat(self, path: str, follow: bool) -> os.stat_result | None:
        try:
            return os.lstat(self._at(path, follow))
        except (FileNotFoundError, NotADirectoryError):
            return None

    # -- inspection ----------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self._lstat(path, True) is not None

    def is_dir(self, path: str, followsymlinks: bool | None = None) -> bool:
        st = self._lstat(path, bool(followsymlinks))
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_file(self, path: str, followsymlinks: bool | None = None) -> bool:
        st = self._lstat(path, bool(followsymlinks))
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_symlink(self, path: str) -> bool:
        st = self._lstat(path, False)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def readlink(self, path: str) -> str:
        return os.readlink(self._at(path, False))

    def filesize(self, file: str) -> int:
        return self._at(file).stat().st_size

    def ls(self, directory: str) -> list[str]:
        return sorted(os.listdir(self._at(directory)))

    def find(self, directory: str) -> list[str]:
        top = self._at(directory)
        found = [str(p.relative_to(top)) for p in top.rglob("*")]
        return sorted(found)

    def glob_expand(self, pattern: str, directoryslash: bool | None = None) -> list[str]:
        matches = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            matches = [posixpath.join(m, name) for m in matches if self.is_dir(m, True)
                       for name in self.ls(m) if fnmatch.fnmatchcase(name, part)
                       and (part.startswith(".") or not name.startswith("."))]
        slash = directoryslash is None or directoryslash
        return sorted(m + "/" if slash and self.is_dir(m, True) else m for m in matches if m != "/")

    # -- file contents -------------------------------------------------------------------
    def pread(self, path: str, count: int, offset: int) -> bytes:
        with open(self._at(path), "rb") as f:
            f.seek(offset)
            return f.read(count)

    def write(self, path: str, content: bytes) -> None:
        target = self._at(path)
        if not target.parent.is_dir():
            raise RuntimeError(f"write: {path}: no such directory")
        new = not target.exists()
        target.write_bytes(content)
        if new:
            target.chmod(0o644)

    def upload(self, filename: str, remotefilename: str) -> None:
        self.write(remotefilename, Path(filename).read_bytes())

    # -- tree changes --------------------------------------------------------------------
    def mkdir_p(self, path: str) -> None:
        self._at(path).mkdir(parents=True, exist_ok=True)

    def rm(self, path: str) -> None:
        self._at(path, False).unlink()

    def rm_f(self, path: str) -> None:
        self._at(path, False).unlink(missing_ok=True)

    def mv(self, src: str, dest: str) -> None:
        shutil.move(self._at(src, False), self._at(dest, False))

    def cp_a(self, src: str, dest: str) -> None:
        source, target = self._at(src), self._at(dest)
        if target.is_dir():
            target = target / source.name
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)

    def ln_s(self, target: str, linkname: str) -> None:
        os.symlink(target, self._at(linkname, False))

    def chmod(self, mode: int, path: str) -> None:
        self._at(path).chmod(mode)

    def chown(self, owner: int, group: int, path: str) -> None:
        self.owners[self.resolve(path)] = (owner, group)

    def lchown(self, owner: int, group: int, path: str) -> None:
        self.owners[self.resolve(path, False)] = (owner, group)

    # -- session -------------------------------------------------------------------------
    def mount(self, mountable: str, mountpoint: str) -> None:
        if mountpoint != "/" and not self.is_dir(mountpoint, True):
            raise RuntimeError(f"mount: {mountpoint}: no such directory")
        self.mounts[posixpath.normpath(mountpoint)] = self.devices[mountable]
        self.calls.append(f"mount {mountable} {mountpoint}")

    def mount_ro(self, mountable: str, mountpoint: str) -> None:
        self.mount(mountable, mountpoint)

    def drop_caches(self, whattodrop: int) -> None:
        self.calls.append(f"drop_caches {whattodrop}")

    def umount_all(self) -> None:
        self.mounts.clear()
        self.calls.append("umount_all")

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def close(self) -> None:
        self.calls.append("close")

    # -- for assertions ------------------------------------------------------------------
    def text(self, path: str) -> str:
        return self._at(path).read_text()

    def mode(self, path: str) -> int:
        return stat.S_IMODE(self._at(path).stat().st_mode)


class FakeLaunch:
    """Stands for stages.image.guest.Launch: an appliance already booted, handed over by ``handle``."""

    def __init__(self, g: FakeGuest) -> None:
        self.g = g

    def handle(self) -> FakeGuest:
        return self.g

    def close(self) -> None:
        self.g.close()
