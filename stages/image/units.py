"""systemd unit enable/disable/mask inside an image, through a libguestfs handle.

What `systemctl enable` does, done as files: symlinks in /etc/systemd/system/<target>.wants
(or .requires) for each WantedBy=/RequiredBy= of the unit's [Install] section.
"""

from __future__ import annotations

from stages.image.guest_files import read_text
from stages.image.handle import GuestHandle

UNIT_DIRS = ["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"]
ETC = "/etc/systemd/system"


def find_unit(g: GuestHandle, name: str) -> str | None:
    for d in UNIT_DIRS:
        path = f"{d}/{name}"
        if g.exists(path) and not _masked(g, path):
            return path
    return None


def _masked(g: GuestHandle, path: str) -> bool:
    return bool(g.is_symlink(path) and g.readlink(path) == "/dev/null")


def install_targets(unit_text: str) -> list[tuple[str, str]]:
    """[(target, 'wants'|'requires')] from a unit's [Install] section."""
    out: list[tuple[str, str]] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, _, value = line.partition("=")
            kind = {"WantedBy": "wants", "RequiredBy": "requires"}.get(key.strip())
            if kind:
                out += [(t, kind) for t in value.split()]
    return out


def enable(g: GuestHandle, name: str) -> bool:
    """Enable a unit offline; False when the image has no such unit."""
    unmask(g, name)
    path = find_unit(g, name)
    if path is None:
        return False
    for target, kind in install_targets(read_text(g, path)):
        d = f"{ETC}/{target}.{kind}"
        g.mkdir_p(d)
        link = f"{d}/{name}"
        if g.is_symlink(link) or g.exists(link):
            g.rm_f(link)
        g.ln_s(path, link)
    return True


def disable(g: GuestHandle, name: str) -> list[str]:
    """Remove every enablement symlink of ``name`` under /etc/systemd/system; returns them."""
    removed = []
    for d in g.ls(ETC) if g.is_dir(ETC) else []:
        if d.endswith((".wants", ".requires")):
            link = f"{ETC}/{d}/{name}"
            if g.is_symlink(link):
                g.rm_f(link)
                removed.append(link)
    return removed


def mask(g: GuestHandle, name: str) -> None:
    disable(g, name)
    link = f"{ETC}/{name}"
    if g.exists(link) or g.is_symlink(link):
        g.rm_f(link)
    g.ln_s("/dev/null", link)


def unmask(g: GuestHandle, name: str) -> None:
    link = f"{ETC}/{name}"
    if g.is_symlink(link) and g.readlink(link) == "/dev/null":
        g.rm_f(link)


def is_enabled(g: GuestHandle, name: str) -> bool:
    """True when some .wants/.requires directory links the unit."""
    for d in g.ls(ETC) if g.is_dir(ETC) else []:
        if d.endswith((".wants", ".requires")) and g.is_symlink(f"{ETC}/{d}/{name}"):
            return True
    return False
