"""Accounts and SSH: the user's hash and keys, root locked, sshd on, password logins as set."""

from __future__ import annotations

from pathlib import Path

from stages.core import progress
from stages.core.checks import KEY_PREFIXES
from stages.core.errors import UserError
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image import units
from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle
from stages.textedit.accounts import add_user, has_password, lock_root, rename_user, set_password_hash, user_entry
from stages.textedit.services import sshd_dropin

ACCOUNT_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")
CLOUD_INIT = "/usr/bin/cloud-init"  # in the image: it can create the user from user-data on the boot partition
GROUPS = ["adm", "dialout", "sudo", "audio", "video", "plugdev", "users", "input", "netdev", "gpio", "i2c", "spi"]


def authorized_keys(ctx: Context) -> list[str]:
    """Key lines from the recipe: inline keys, or .pub files (made absolute when the recipe was read)."""
    keys = []
    for entry in ctx.config.users.authorized_keys:
        if entry.startswith(KEY_PREFIXES):
            keys.append(entry.strip())
            continue
        path = Path(entry)
        try:
            lines = [x.strip() for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]
        except OSError:
            raise UserError(str(ctx.config.recipe), f"cannot read key file {path}", key="users.authorized_keys",
                            hint="give a public key line (ssh-ed25519 AAAA...) or an existing .pub file") from None
        if not lines or not all(x.startswith(KEY_PREFIXES) for x in lines):
            raise UserError(str(ctx.config.recipe), f"{path} holds no SSH public key", key="users.authorized_keys",
                            hint="use the .pub file, never the private key")
        keys += lines
    return keys


def login_ways(password: bool, ssh_key: bool, cloud_init: bool) -> list[str]:
    """How the user can get in: a password hash, an authorized key (sshd on), or user-data that
    cloud-init in the image reads at first boot (written to the card at flash time)."""
    return [way for way, there in (("password", password), ("ssh key", ssh_key),
                                   ("cloud-init user-data", cloud_init)) if there]


def no_login_warning(user: str) -> str:
    """One line for a build that leaves ``user`` no way in."""
    return (f"users: nobody can log in as {user}: no password hash, no authorized key, and no cloud-init to take "
            "user-data at first boot (hint: add users.authorized_keys or users.password_hash to the recipe, or "
            "build with --set users.authorized_keys='[\"~/.ssh/id_ed25519.pub\"]')")


class Accounts(Stage):
    name = "accounts and ssh"
    reads = frozenset({"g", "boot_mount", "image"})

    def check(self, ctx: Context) -> None:
        authorized_keys(ctx)

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        u = ctx.config.users
        files = [read_text(g, f) if g.exists(f) else "" for f in ACCOUNT_FILES]
        passwd, shadow, group, gshadow = files
        action = "kept"
        if user_entry(passwd, u.name) is None:
            if u.name != "pi" and user_entry(passwd, "pi") is not None:
                passwd, shadow, group, gshadow = rename_user(passwd, shadow, group, gshadow, "pi", u.name)
                action = "renamed from pi"
                if g.is_dir("/home/pi"):
                    g.mv("/home/pi", f"/home/{u.name}")
            else:
                passwd, shadow, group, gshadow = add_user(passwd, shadow, group, gshadow, u.name,
                                                          u.password_hash or "!", GROUPS)
                action = "created"
        if u.password_hash:
            shadow = set_password_hash(shadow, u.name, u.password_hash)
        if u.lock_root:
            shadow = lock_root(shadow)
        for path, old, new in zip(ACCOUNT_FILES, files, (passwd, shadow, group, gshadow), strict=True):
            if new != old:
                write_text(g, path, new)
        g.chmod(0o640, "/etc/shadow")
        entry = user_entry(passwd, u.name)
        assert entry is not None
        uid, gid, home = entry
        if action == "created" and not g.is_dir(home):
            g.cp_a("/etc/skel", home)
            _chown_tree(g, home, uid, gid)
        keys = authorized_keys(ctx)
        if keys:
            g.mkdir_p(f"{home}/.ssh")
            write_text(g, f"{home}/.ssh/authorized_keys", "\n".join(keys) + "\n", 0o600)
            g.chmod(0o700, f"{home}/.ssh")
            _chown_tree(g, f"{home}/.ssh", uid, gid)
        # Raspberry Pi OS (bookworm) sets the first user from userconf.txt at first boot.
        if g.exists("/usr/lib/userconf-pi/userconf") and u.password_hash:
            write_text(g, f"{need(ctx.state.boot_mount, 'boot_mount')}/userconf.txt", f"{u.name}:{u.password_hash}\n")
        self._hostname(g, u.hostname)
        self._ssh(ctx, g, bool(keys))
        logins = login_ways(has_password(shadow, u.name), bool(keys) and ctx.config.ssh.enable,
                            g.exists(CLOUD_INIT))
        if not logins:
            progress.warn(no_login_warning(u.name))
        ctx.record("accounts", "user", {"name": u.name, "action": action, "authorized_keys": len(keys),
                                        "root_locked": u.lock_root, "logins": logins})

    def _hostname(self, g: GuestHandle, name: str) -> None:
        write_text(g, "/etc/hostname", name + "\n")
        hosts = read_text(g, "/etc/hosts") if g.exists("/etc/hosts") else "127.0.0.1\tlocalhost\n"
        lines = [x for x in hosts.splitlines() if not x.startswith("127.0.1.1")]
        write_text(g, "/etc/hosts", "\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")

    def _ssh(self, ctx: Context, g: GuestHandle, have_keys: bool) -> None:
        setting = ctx.config.ssh.password_authentication
        allow = setting == "yes" or (setting == "auto" and not have_keys)
        g.mkdir_p("/etc/ssh/sshd_config.d")
        write_text(g, "/etc/ssh/sshd_config.d/50-entropi.conf", sshd_dropin(allow), 0o644)
        enabled = ctx.config.ssh.enable and units.enable(g, "ssh.service")
        if ctx.config.ssh.enable and not enabled:
            raise UserError(str(ctx.state.image), "the image has no ssh.service", key="ssh.enable",
                            hint="add openssh-server to packages.install")
        if not ctx.config.ssh.enable:
            units.disable(g, "ssh.service")
        ctx.record("ssh", "password_authentication", allow)
        ctx.record("ssh", "enabled", bool(enabled))


def _chown_tree(g: GuestHandle, top: str, uid: int, gid: int) -> None:
    g.chown(uid, gid, top)
    for rel in g.find(top):
        if rel:
            g.lchown(uid, gid, f"{top}/{rel}")
