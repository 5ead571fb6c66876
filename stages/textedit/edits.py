"""Pure text edits the stages apply inside images: config.txt, modules, accounts, sshd, rngd.

No I/O here: every function takes and returns text, so each is unit-tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from stages.core.errors import UserError

# -- config.txt -------------------------------------------------------------------------
#
# config.txt is read top to bottom by the firmware. ``[filter]`` lines ([pi4], [cm5],
# [none], [gpio4=1], [0x...], ...) make the lines after them conditional until the next
# filter; ``[all]`` (or no filter at all) makes them apply to every board. ``dtparam=``
# takes comma-separated ``name=value`` items. Overlay scope: a dtparam after a dtoverlay
# goes to that overlay only when the overlay exports a parameter of that name, otherwise
# to the base device tree (raspberrypi/documentation, device-tree "DT parameters"); no
# overlay exports ``random``, and the block we append puts its dtparams before its
# dtoverlays so that our own overlay never captures them.


def _section(line: str) -> str | None:
    s = line.strip().lstrip("\ufeff")
    return s if s.startswith("[") and s.endswith("]") else None


def _directive(line: str) -> tuple[str, str] | None:
    """('dtparam', 'audio=on,random=off') for an active line; None for comments/blank/filters."""
    s = line.strip().lstrip("\ufeff")
    if not s or s.startswith(("#", "[")) or "=" not in s:
        return None
    name, _, value = s.partition("=")
    return name.strip(), value.strip()


def _param(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _overlay(value: str) -> str:
    return re.split(r"[,:]", value, maxsplit=1)[0].strip()


def _wanted_key(line: str) -> tuple[str, str]:
    d = _directive(line)
    if d is None:
        raise ValueError(f"not a config.txt setting: {line!r}")
    name, value = d
    if name == "dtparam":
        return name, _param(value)
    if name == "dtoverlay":
        if not _overlay(value):
            raise ValueError(f"empty overlay: {line!r}")
        return name, _overlay(value)
    return name, ""


def _normalise_wanted(extra: list[str]) -> list[str]:
    """dtparam=random=on first, extra after; combined dtparams split; duplicates dropped."""
    lines: list[str] = []
    for raw in ["dtparam=random=on", *extra]:
        d = _directive(raw)
        if d is not None and d[0] == "dtparam" and "," in d[1]:
            lines.extend(f"dtparam={item.strip()}" for item in d[1].split(",") if item.strip())
        else:
            lines.append(raw.strip())
    by_key: dict[tuple[str, str], str] = {}
    for line in lines:
        key = _wanted_key(line)
        if key in by_key and by_key[key] != line:
            raise ValueError(f"conflicting config.txt lines: {by_key[key]!r} and {line!r}")
        by_key.setdefault(key, line)
    ordered = list(by_key.values())
    # dtparams before dtoverlays: a dtparam right after our dtoverlay would be offered to it.
    return sorted(ordered, key=lambda w: _wanted_key(w)[0] == "dtoverlay")


@dataclass
class _Hit:
    index: int  # line number
    whole: bool  # the line is only this setting (not one item of a combined dtparam)


def _find_settings(lines: list[str], keys: dict[tuple[str, str], str],
                   dt_keys: set[str]) -> dict[tuple[str, str], list[_Hit]]:
    """Every line that sets one of ``keys`` (a dtparam item, an overlay, a plain setting)."""
    hits: dict[tuple[str, str], list[_Hit]] = {k: [] for k in keys}
    for i, line in enumerate(lines):
        d = _directive(line)
        if d is None:
            continue
        name, value = d
        if name == "dtparam":
            params = [_param(item) for item in value.split(",")]
            for p in params:
                if p in dt_keys:
                    hits[("dtparam", p)].append(_Hit(i, len(params) == 1))
        elif name == "dtoverlay":
            if ("dtoverlay", _overlay(value)) in keys:
                hits[("dtoverlay", _overlay(value))].append(_Hit(i, True))
        elif (name, "") in keys:
            hits[(name, "")].append(_Hit(i, True))
    return hits


def _without(lines: list[str], drop: set[int], dt_keys: set[str]) -> list[str]:
    """``lines`` without the ``drop`` ones; a combined dtparam among them keeps its other items."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if i not in drop:
            out.append(line)
            continue
        d = _directive(line)
        assert d is not None
        if d[0] != "dtparam":
            continue
        items = [item for item in d[1].split(",") if _param(item) not in dt_keys]
        if items:  # a combined dtparam keeps its other items, its indentation and its eol
            lead = line[: len(line) - len(line.lstrip())]
            ending = line[len(line.rstrip("\r\n")):]
            out.append(f"{lead}dtparam={','.join(items)}{ending}")
    return out


def enable_hwrng_config(text: str, extra: list[str] | None = None) -> str:
    """Make ``dtparam=random=on`` (and each ``extra`` line) appear exactly once, in ``[all]``.

    Any other occurrence of the same setting (``dtparam=random=off``, a duplicate, one in a
    ``[pi4]`` or ``[none]`` section, the ``random=off`` item of ``dtparam=audio=on,random=off``,
    ``dtoverlay=tpm-slb9670`` with other parameters) is removed; the setting is then
    appended to the last section when that is ``[all]`` (or when there are no sections),
    else after a new ``[all]`` line at the end. A setting that is already exactly once,
    in that final ``[all]`` part, and exactly as wanted stays where it is, so running this
    again changes nothing. ``extra`` dtparams are base device-tree parameters.

    Every other line (comments, ``#dtparam=random=on``, conditional sections) is kept byte
    for byte, and so are a UTF-8 BOM and the line endings (CRLF stays CRLF). Raises
    ValueError for an ``extra`` that is not a setting or contradicts another.
    """
    wanted = _normalise_wanted(list(extra or []))
    keys = {_wanted_key(w): w for w in wanted}
    dt_keys = {k[1] for k in keys if k[0] == "dtparam"}
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    eol = "\r\n" if "\r\n" in body else "\n"
    lines = body.splitlines(keepends=True)

    # Where the final "effective for all boards" part starts.
    tail_start, last_section = 0, None
    for i, line in enumerate(lines):
        if (sec := _section(line)) is not None:
            last_section, tail_start = sec, i + 1
    tail_is_all = last_section in (None, "[all]")

    hits = _find_settings(lines, keys, dt_keys)
    keep: set[int] = set()  # lines already right
    append: list[str] = []
    for key, line in keys.items():
        found = hits[key]
        if (len(found) == 1 and found[0].whole and tail_is_all and found[0].index >= tail_start
                and lines[found[0].index].strip().lstrip("\ufeff") == line):
            keep.add(found[0].index)
        else:
            append.append(line)
    drop = {h.index for found in hits.values() for h in found} - keep
    out = _without(lines, drop, dt_keys)
    if not append:
        return bom + "".join(out)
    if out and not out[-1].endswith("\n"):
        out[-1] += eol
    if not tail_is_all:
        out.append(f"[all]{eol}")
    out.extend(f"{w}{eol}" for w in append)
    return bom + "".join(out)


# -- kernel modules ---------------------------------------------------------------------

_MODULE_FILE = re.compile(r"^(?P<name>[^/]+)\.ko(?:\.(?:xz|zst|gz))?$")


def _module_names(paths: list[str] | str) -> set[str]:
    """Module names (underscores) of module files given as paths or modules.builtin text."""
    lines = paths.splitlines() if isinstance(paths, str) else paths
    names = set()
    for p in lines:
        m = _MODULE_FILE.match(p.strip().rsplit("/", 1)[-1])
        if m:
            names.add(m.group("name").replace("-", "_"))
    return names


def _loadable(name: str, module_paths: list[str], modules_builtin: str) -> bool:
    return name in _module_names(module_paths) and name not in _module_names(modules_builtin)


def pick_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """The SoC RNG module to load for one kernel, or None when there is nothing to load.

    ``module_paths`` are module files relative to /lib/modules/<version>/ (any compression);
    ``modules_builtin`` is that kernel's modules.builtin. ``bcm2708_rng`` is the old
    downstream driver (2015-era kernels); ``bcm2835_rng`` is today's, usually built in
    (CONFIG_HW_RANDOM_BCM2835=y), in which case None: built in, it needs no loading.
    """
    for name in ("bcm2708_rng", "bcm2835_rng"):
        if _loadable(name, module_paths, modules_builtin):
            return name
    return None


def pick_tpm_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """``tpm_rng`` on kernels that have it as a module; None otherwise.

    Since Linux 4.x the TPM core registers the TPM's hwrng itself, so newer kernels have
    no tpm_rng and need nothing loaded.
    """
    return "tpm_rng" if _loadable("tpm_rng", module_paths, modules_builtin) else None


def modules_load_conf(modules: list[str]) -> str:
    """Contents of /etc/modules-load.d/entropi-hwrng.conf: a header, then one module a line.

    Names are normalised to underscores and repeated names dropped. They come from the
    image's module files or from ``hwrng.module``, which config.py has validated; anything
    else is a programmer error (ValueError).
    """
    names: list[str] = []
    for m in modules:
        name = m.replace("-", "_")
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ValueError(f"not a kernel module name: {m!r}")
        if name not in names:
            names.append(name)
    head = ("# Written by entropi: load the hardware RNG drivers at boot (systemd-modules-load).\n"
            "# The device tree enables the RNG (dtparam=random=on in config.txt).\n")
    return head + "".join(f"{n}\n" for n in names)


# -- accounts ---------------------------------------------------------------------------
#
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


# -- sshd, rngd, cmdline ----------------------------------------------------------------

RNGD_PACKAGES = ("rng-tools-debian", "rng-tools5")
RPI_REGENERATOR = "/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys"


def sshd_dropin(password_authentication: bool) -> str:
    """Contents of /etc/ssh/sshd_config.d/50-entropi.conf.

    sshd keeps the first value it reads for a keyword and reads sshd_config.d/*.conf in
    order, so 50- wins over the main file's later lines and leaves room for the user.
    """
    yes = "yes" if password_authentication else "no"
    return ("# Written by entropi: SSH logins. Root never logs in; passwords only when the\n"
            "# recipe allows them (ssh.password_authentication).\n"
            f"PasswordAuthentication {yes}\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin no\n")


def rngd_defaults(package: str, device: str, fill_bits: int) -> str:
    """Contents of rngd's defaults file: /etc/default/rng-tools-debian or, for rng-tools5,
    /etc/default/rng-tools. ``fill_bits`` is the watermark up to which rngd fills the pool.
    """
    if package not in RNGD_PACKAGES:
        raise ValueError(f"unknown rngd package {package!r}; expected one of {', '.join(RNGD_PACKAGES)}")
    if not device.startswith("/dev/") or any(c in device for c in '"\n '):
        raise ValueError(f"not a device path (config.py validates rngd.device): {device!r}")
    if fill_bits <= 0:
        raise ValueError(f"fill watermark must be positive, got {fill_bits}")
    head = ("# Written by entropi: rngd feeds the hardware RNG to the kernel; fill at most half\n"
            "# the pool (the watermark below), so the hardware RNG is never the only source.\n")
    if package == "rng-tools5":
        return head + f'RNGDOPTIONS="--rng-device={device} --fill-watermark={fill_bits}"\n'
    return head + f'HRNGDEVICE={device}\nRNGDOPTIONS="--fill-watermark={fill_bits}"\n'


def with_diversion(diversions: str, path: str, divert_to: str) -> str:
    """/var/lib/dpkg/diversions with a local diversion of ``path`` to ``divert_to`` (what
    ``dpkg-divert --local --rename --divert TO --add PATH`` records): triples of lines,
    diverted path, where the package's file goes, and ``:`` for a local diversion.
    An existing diversion of ``path`` is kept as it is; other entries are untouched.
    """
    lines = diversions.splitlines()
    if len(lines) % 3:
        raise UserError("/var/lib/dpkg/diversions", f"{len(lines)} lines, not triples",
                        hint="the image's dpkg database is damaged; run dpkg-divert --list in it")
    if path in lines[0::3]:
        return diversions
    body = diversions if diversions.endswith("\n") or not diversions else diversions + "\n"
    return body + f"{path}\n{divert_to}\n:\n"


def deferring_regenerator(script: str) -> str:
    """What stands in for Raspberry Pi OS's key regenerator: it makes no keys and says why.

    Its first-boot ``init=`` script (which also fixes the PARTUUIDs and expands the root
    file system) and its unit both call ``script``; they go on working, and entropi's own
    unit makes the keys once the kernel's random generator is ready.
    """
    return ("#!/bin/sh\n"
            "# Written by entropi. SSH host keys are made by entropi-firstboot.service once the\n"
            "# kernel's random generator is ready; the packaged script is diverted to\n"
            f"# {script}.distrib (dpkg-divert --list).\n"
            "echo 'regenerate_ssh_host_keys: left to entropi-firstboot.service' >&2\n"
            "exit 0\n")
