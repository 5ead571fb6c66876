"""Account files (/etc/passwd, shadow, group, gshadow) as text: add or rename the user, set
the password hash, lock root."""

from __future__ import annotations

from collections.abc import Callable

from stages.core.errors import UserError

# /etc/passwd, /etc/shadow, /etc/group and /etc/gshadow as text. Lines are split on "\n"
# only, and a line is rebuilt only when it changes, so every other line (comments, odd
# fields, unusual characters) and the presence or absence of the final newline survive.

FIRST_UID, LAST_UID = 1000, 59999  # Debian's FIRST_UID/LAST_UID (adduser.conf)


def _check_field(value: str, what: str) -> None:
    """A value that would break a colon-separated line is a programmer error: config.py
    validates users.name and users.password_hash, so none reaches here from a recipe."""
    if not value or any(c in value for c in ":\n\r"):
        raise ValueError(f"a {what} cannot be empty or contain ':' or a newline: {value!r}")


def _edit(text: str, change: Callable[[list[str]], list[str] | None]) -> str:
    """Apply ``change`` to each line's fields; None (or the same fields) keeps the line as it is."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        fields = line.split(":")
        new = change(list(fields))
        if new is not None and new != fields:
            lines[i] = ":".join(new)
    return "\n".join(lines)


def _names(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.split("\n") if line and not line.startswith("#")}


def _append(text: str, line: str) -> str:
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"


def _rename_member(members: str, old: str, new: str) -> str:
    if not members:
        return members
    out: list[str] = []
    for m in members.split(","):
        m = new if m == old else m
        if m not in out:
            out.append(m)
    return ",".join(out)


def user_entry(passwd: str, name: str) -> tuple[int, int, str] | None:
    """(uid, gid, home) of ``name`` in /etc/passwd text, or None when there is no such user."""
    for line in passwd.split("\n"):
        row = line.split(":")
        if len(row) >= 7 and row[0] == name:
            try:
                return int(row[2]), int(row[3]), row[5]
            except ValueError:
                return None
    return None


def has_password(shadow: str, name: str) -> bool:
    """Whether ``name``'s entry in /etc/shadow text holds a hash one can log in with (not empty,
    not locked with '!' or '*')."""
    for line in shadow.split("\n"):
        row = line.split(":")
        if len(row) >= 2 and row[0] == name:
            return bool(row[1]) and not row[1].startswith(("!", "*"))
    return False


def set_password_hash(shadow: str, user: str, hash: str, *, last_change: int | None = None) -> str:
    """Put ``hash`` (a crypt(3) string, or '!'/'*' for none) in ``user``'s shadow entry.

    Only the password field changes, and the last-change day (days since 1970) when
    ``last_change`` is given: with no date here the function stays pure, and an existing
    0 (which forces a change at the next login) is left for the caller to decide on.
    """
    _check_field(hash, "password hash")
    found = False

    def change(row: list[str]) -> list[str] | None:
        nonlocal found
        if row[0] != user or len(row) < 2 or found:
            return None
        found = True
        row[1] = hash
        if last_change is not None and len(row) >= 3:
            row[2] = str(last_change)
        return row

    out = _edit(shadow, change)
    if not found:
        raise UserError("/etc/shadow", f"no shadow entry for {user}", key="users.name",
                        hint="the image's account files are inconsistent; check /etc/passwd and /etc/shadow")
    return out


def lock_root(shadow: str) -> str:
    """Root's password field becomes ``!``: what ``passwd -dl root`` leaves (no password, locked).

    ``!`` rather than ``*``: `passwd -S root` reports it as locked (L), and `passwd -u`
    can never unlock it into a password-less login because there is no hash behind it.
    Root can still be reached with sudo by the login user, never by a password.
    """
    found = False

    def change(row: list[str]) -> list[str] | None:
        nonlocal found
        if row[0] != "root" or len(row) < 2:
            return None
        found = True
        row[1] = "!"
        return row

    out = _edit(shadow, change)
    if not found:
        raise UserError("/etc/shadow", "no shadow entry for root", key="users.lock_root",
                        hint="the image has no root in /etc/shadow; set users.lock_root = false")
    return out


def rename_user(passwd: str, shadow: str, group: str, gshadow: str, old: str,
                new: str) -> tuple[str, str, str, str]:
    """Rename ``old`` to ``new`` everywhere: passwd, shadow, its own group, every membership.

    The home field /home/<old> becomes /home/<new> (moving the directory is the caller's
    job); any other home is kept. The user's own group is the group named ``old`` with the
    user's primary gid; a shared primary group (e.g. ``users``) is not renamed.
    Returns (passwd, shadow, group, gshadow).
    """
    entry = user_entry(passwd, old)
    if entry is None:
        raise UserError("/etc/passwd", f"no user {old} to rename", key="users.name", hint="check the base image")
    if old == new:
        return passwd, shadow, group, gshadow
    _check_field(new, "user name")
    if new in _names(passwd) or new in _names(shadow):
        raise UserError("/etc/passwd", f"user {new} exists already", key="users.name", hint="pick another name")
    gid = entry[1]
    own_group = any(r[0] == old and len(r) >= 3 and r[2] == str(gid) for r in (x.split(":") for x in group.split("\n")))
    if own_group and (new in _names(group) or new in _names(gshadow)):
        raise UserError("/etc/group", f"group {new} exists already", key="users.name", hint="pick another name")

    def fix_passwd(row: list[str]) -> list[str] | None:
        if row[0] != old:
            return None
        row[0] = new
        if len(row) >= 6 and row[5] == f"/home/{old}":
            row[5] = f"/home/{new}"
        return row

    def fix_shadow(row: list[str]) -> list[str] | None:
        if row[0] == old:
            row[0] = new
        return row

    def fix_group(row: list[str]) -> list[str] | None:
        if own_group and row[0] == old and len(row) >= 3 and row[2] == str(gid):
            row[0] = new
        if len(row) >= 4:
            row[3] = _rename_member(row[3], old, new)
        return row

    def fix_gshadow(row: list[str]) -> list[str] | None:
        if own_group and row[0] == old:
            row[0] = new
        for col in (2, 3):  # administrators, members
            if len(row) > col:
                row[col] = _rename_member(row[col], old, new)
        return row

    return _edit(passwd, fix_passwd), _edit(shadow, fix_shadow), _edit(group, fix_group), _edit(gshadow, fix_gshadow)


def add_user(passwd: str, shadow: str, group: str, gshadow: str, name: str, hash: str,
             groups: list[str], *, last_change: int | None = None) -> tuple[str, str, str, str]:
    """Add ``name`` like ``adduser``: own group, home /home/<name>, /bin/bash, extra groups.

    uid and gid are the same number, the lowest >= 1000 free both as a uid and as a gid.
    ``groups`` that the image does not have are skipped. ``hash`` may be '!' (no password
    yet). Raises UserError when the user or a group of that name exists already.
    Returns (passwd, shadow, group, gshadow); gshadow stays empty when it was empty.
    """
    _check_field(name, "user name")
    _check_field(hash, "password hash")
    if name in _names(passwd) or name in _names(shadow):
        raise UserError("/etc/passwd", f"user {name} exists already", key="users.name", hint="pick another name")
    if name in _names(group):
        raise UserError("/etc/group", f"group {name} exists already", key="users.name", hint="pick another name")

    def ids(text: str) -> set[str]:
        return {r[2] for r in (x.split(":") for x in text.split("\n")) if len(r) >= 3}

    used = ids(passwd) | ids(group)
    uid = next((i for i in range(FIRST_UID, LAST_UID + 1) if str(i) not in used), None)
    if uid is None:
        raise UserError("/etc/passwd", f"no free uid between {FIRST_UID} and {LAST_UID}", key="users.name")
    wanted = set(groups) - {name}

    def join(col: int) -> Callable[[list[str]], list[str] | None]:
        def change(row: list[str]) -> list[str] | None:
            if row[0] not in wanted or len(row) <= col:
                return None
            members = [m for m in row[col].split(",") if m]
            if name not in members:
                row[col] = ",".join([*members, name])
            return row
        return change

    passwd = _append(passwd, f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash")
    lastchg = "" if last_change is None else str(last_change)
    shadow = _append(shadow, f"{name}:{hash}:{lastchg}:0:99999:7:::")
    group = _append(_edit(group, join(3)), f"{name}:x:{uid}:")
    if gshadow:
        gshadow = _append(_edit(gshadow, join(3)), f"{name}:!::")
    return passwd, shadow, group, gshadow
