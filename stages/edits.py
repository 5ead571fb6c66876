"""Pure text edits the stages apply inside images: config.txt, modules, accounts, sshd, rngd.

No I/O here: every function takes and returns text, so each is unit-tested on its own.
"""

from __future__ import annotations

import re

from stages.errors import UserError

# -- config.txt -------------------------------------------------------------------------


def _key_of(line: str) -> tuple[str, str] | None:
    """('dtparam', 'random') for 'dtparam=random=on'; ('dtoverlay', 'tpm-slb9670') for overlays."""
    body = line.strip()
    if body.startswith("#") or "=" not in body:
        return None
    name, _, value = body.partition("=")
    name = name.strip()
    if name == "dtparam":
        return name, value.split("=", 1)[0].strip()
    if name == "dtoverlay":
        return name, value.split(",", 1)[0].strip()
    return name, ""


def _drop_param(line: str, param: str) -> str | None:
    """Remove ``param`` from a dtparam line (also from combined 'dtparam=a=on,random=off')."""
    prefix, _, rest = line.partition("=")
    eol = rest[len(rest.rstrip("\r\n")):]
    items = [i for i in rest.rstrip("\r\n").split(",") if i.split("=", 1)[0].strip() != param]
    if not items:
        return None
    return f"{prefix}={','.join(items)}{eol}"


def enable_hwrng_config(text: str, extra: list[str] | None = None) -> str:
    """Make `dtparam=random=on` (and ``extra`` lines) appear exactly once, effective in [all].

    Every other line, comment and conditional section is kept byte for byte; the file's
    line endings are kept; running it again changes nothing.
    """
    wanted = ["dtparam=random=on", *(extra or [])]
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    eol = "\r\n" if "\r\n" in body else "\n"
    lines = body.splitlines(keepends=True)
    wanted_keys = {_key_of(w): w for w in wanted}
    out: list[str] = []
    for line in lines:
        key = _key_of(line)
        if key is None:
            out.append(line)
            continue
        if key in wanted_keys:
            continue  # removed here, re-added once at the end
        if key[0] == "dtparam" and "," in line:
            kept: str | None = line
            for wkey in wanted_keys:
                if wkey is not None and wkey[0] == "dtparam" and kept is not None:
                    kept = _drop_param(kept, wkey[1])
            if kept is not None:
                out.append(kept)
            continue
        out.append(line)
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += eol
    last_section = None
    for line in out:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            last_section = stripped
    if last_section not in (None, "[all]"):
        out.append(f"[all]{eol}")
    out.extend(f"{w}{eol}" for w in wanted)
    return bom + "".join(out)


# -- kernel modules ---------------------------------------------------------------------


def _module_names(paths: list[str]) -> set[str]:
    names = set()
    for p in paths:
        base = p.rsplit("/", 1)[-1]
        base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", base)
        names.add(base.replace("-", "_"))
    return names


def pick_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """The SoC RNG module to load: bcm2708_rng (old kernels), bcm2835_rng, or None if built in."""
    names = _module_names(module_paths)
    if "bcm2708_rng" in names:
        return "bcm2708_rng"
    if "bcm2835_rng" in names:
        return "bcm2835_rng"
    return None


def pick_tpm_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """tpm_rng on kernels that have it; newer kernels register the TPM hwrng from the TPM core."""
    return "tpm_rng" if "tpm_rng" in _module_names(module_paths) else None


def modules_load_conf(modules: list[str]) -> str:
    return "# entropi: hardware RNG drivers (see dtparam=random=on in config.txt)\n" + "".join(
        f"{m}\n" for m in modules)


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
