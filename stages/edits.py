"""Pure text edits the stages apply inside images: config.txt, modules, accounts, sshd, rngd.

No I/O here: every function takes and returns text, so each is unit-tested on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.errors import UserError

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
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


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

    Names are normalised to underscores and repeated names dropped; a name that is not a
    module name (only ``hwrng.module`` in a recipe can bring one) raises UserError.
    """
    names: list[str] = []
    for m in modules:
        name = m.strip().replace("-", "_")
        if not _MODULE_NAME.match(name):
            raise UserError("/etc/modules-load.d/entropi-hwrng.conf", f"not a kernel module name: {m!r}",
                            key="hwrng.module", hint="use a name like bcm2835_rng, or 'auto'")
        if name not in names:
            names.append(name)
    head = ("# Written by entropi: load the hardware RNG drivers at boot (systemd-modules-load).\n"
            "# The device tree enables the RNG (dtparam=random=on in config.txt).\n")
    return head + "".join(f"{n}\n" for n in names)


# -- accounts ---------------------------------------------------------------------------


def _rows(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines()]


def _join(rows: list[list[str]], original: str) -> str:
    out = "\n".join(":".join(r) for r in rows)
    return out + ("\n" if original.endswith("\n") or not original else "")


def user_entry(passwd: str, name: str) -> tuple[int, int, str] | None:
    for row in _rows(passwd):
        if len(row) >= 7 and row[0] == name:
            return int(row[2]), int(row[3]), row[5]
    return None


def set_password_hash(shadow: str, user: str, hash: str) -> str:
    rows = _rows(shadow)
    for row in rows:
        if row[0] == user and len(row) > 1:
            row[1] = hash
            return _join(rows, shadow)
    raise UserError("/etc/shadow", f"no shadow entry for {user}", key="users.name", hint="check the user name")


def lock_root(shadow: str) -> str:
    """Like `passwd -dl root`: no password, locked ('!')."""
    rows = _rows(shadow)
    for row in rows:
        if row[0] == "root" and len(row) > 1:
            row[1] = "!"
    return _join(rows, shadow)


def rename_user(passwd: str, shadow: str, group: str, gshadow: str, old: str,
                new: str) -> tuple[str, str, str, str]:
    if user_entry(passwd, new) is not None:
        raise UserError("/etc/passwd", f"user {new} exists already", key="users.name", hint="pick another name")

    def fix(text: str, members_col: int | None, home: bool = False) -> str:
        rows = _rows(text)
        for row in rows:
            if row and row[0] == old:
                row[0] = new
                if home and len(row) >= 6 and row[5] == f"/home/{old}":
                    row[5] = f"/home/{new}"
            if members_col is not None and len(row) > members_col:
                members = row[members_col].split(",") if row[members_col] else []
                row[members_col] = ",".join(new if m == old else m for m in members)
        return _join(rows, text)

    gshadow_rows = _rows(gshadow)
    for row in gshadow_rows:
        if len(row) > 2:
            row[2] = ",".join(new if m == old else m for m in row[2].split(",")) if row[2] else row[2]
    return fix(passwd, None, home=True), fix(shadow, None), fix(group, 3), fix(_join(gshadow_rows, gshadow), 3)


def _append(text: str, line: str) -> str:
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"


def add_user(passwd: str, shadow: str, group: str, gshadow: str, name: str, hash: str,
             groups: list[str]) -> tuple[str, str, str, str]:
    if user_entry(passwd, name) is not None:
        raise UserError("/etc/passwd", f"user {name} exists already", key="users.name", hint="pick another name")
    used_uids = {int(r[2]) for r in _rows(passwd) if len(r) >= 3 and r[2].isdigit()}
    used_gids = {int(r[2]) for r in _rows(group) if len(r) >= 3 and r[2].isdigit()}
    uid = next(i for i in range(1000, 60000) if i not in used_uids and i not in used_gids)
    passwd = _append(passwd, f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash")
    shadow = _append(shadow, f"{name}:{hash}:19000:0:99999:7:::")
    grows = _rows(group)
    for row in grows:
        if len(row) >= 4 and row[0] in groups:
            row[3] = ",".join([m for m in row[3].split(",") if m] + [name])
    group = _append(_join(grows, group), f"{name}:x:{uid}:")
    gsrows = _rows(gshadow)
    for row in gsrows:
        if len(row) >= 4 and row[0] in groups:
            row[3] = ",".join([m for m in row[3].split(",") if m] + [name])
    gshadow = _append(_join(gsrows, gshadow), f"{name}:!::") if gshadow else gshadow
    return passwd, shadow, group, gshadow


# -- sshd, rngd, cmdline ----------------------------------------------------------------


def sshd_dropin(password_authentication: bool) -> str:
    yes = "yes" if password_authentication else "no"
    return ("# entropi: SSH logins (root never; passwords only when the recipe allows)\n"
            f"PasswordAuthentication {yes}\nKbdInteractiveAuthentication no\nPermitRootLogin no\n")


def rngd_defaults(package: str, device: str, fill_bits: int) -> str:
    head = ("# entropi: feed the hardware RNG to the kernel; fill at most half the pool\n"
            "# (the seed article's advice: do not trust one chip with the whole pool).\n")
    if package == "rng-tools5":
        return head + f'RNGDOPTIONS="--rng-device={device} --fill-watermark={fill_bits}"\n'
    return head + f'HRNGDEVICE={device}\nRNGDOPTIONS="--fill-watermark={fill_bits}"\n'


def cmdline_without_init(cmdline: str) -> str:
    """Drop Raspberry Pi OS's `init=/usr/lib/raspberrypi-sys-mods/firstboot` (it makes host keys)."""
    eol = cmdline[len(cmdline.rstrip("\r\n")):]
    words = [w for w in cmdline.split() if w != "init=/usr/lib/raspberrypi-sys-mods/firstboot"]
    if len(words) == len(cmdline.split()):
        return cmdline
    return " ".join(words) + eol
