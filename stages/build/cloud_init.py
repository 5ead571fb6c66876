"""cloud-init (Raspberry Pi OS trixie): left working, with the recipe's accounts kept.

Users of today's Raspberry Pi OS configure cards with cloud-init (Raspberry Pi Imager
writes user-data to the boot partition), so cloud-init stays on. What the build set must
hold after it runs: a drop-in (textedit/cloud_init.py) makes the recipe's user the default
user and creates or changes no account unless user-data names one.

Host keys: Raspberry Pi OS's config (ssh_deletekeys: false, ssh_genkeytypes: []) yields to
user-data, and no system config can stop user-data from having cloud-init's ssh module
delete keys or make its own. entropi's first-boot guard, which runs on every boot after
cloud-init and before sshd, keeps the host keys it committed; the manifest says so.
"""

from __future__ import annotations

from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.guest_files import write_text
from stages.textedit.cloud_init import DROPIN, accounts_dropin

CLOUD_INIT = "/usr/bin/cloud-init"
SEED_FILES = ("meta-data", "user-data", "network-config")
HOST_KEYS = ("cloud-init's ssh module follows user-data (ssh_deletekeys, ssh_genkeytypes), which no system "
             "config can overrule; entropi's every-boot first-boot guard, after cloud-init and before sshd, "
             "keeps the host keys it committed")


class CloudInit(Stage):
    name = "cloud-init"
    reads = frozenset({"g", "boot_mount"})

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        if not g.exists(CLOUD_INIT):
            ctx.record("cloud_init", "present", False)
            return
        boot = need(ctx.state.boot_mount, "boot_mount")
        user = ctx.config.users.name
        g.mkdir_p(DROPIN.rsplit("/", 1)[0])
        write_text(g, DROPIN, accounts_dropin(user), 0o644)
        ctx.record("cloud_init", "present", True)
        ctx.record("cloud_init", "seed_files", [f for f in SEED_FILES if g.is_file(f"{boot}/{f}")])
        ctx.record("cloud_init", "accounts", {"config": DROPIN, "default_user": user,
                                              "users": "none created or changed unless user-data names them"})
        ctx.record("cloud_init", "host_keys", HOST_KEYS)
