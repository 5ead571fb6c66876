"""Secrets: no pre-baked host keys, seed or machine-id; only entropi makes host keys.

Runs after every package step (openssh's postinst makes keys). /etc/machine-id becomes
`uninitialized`, which makes systemd treat the next boot as the first one.
"""

from __future__ import annotations

from stages import units
from stages.edit import read_text, write_text
from stages.edits import cmdline_without_init
from stages.runner import Context, Stage

REGENERATORS = ["regenerate_ssh_host_keys.service", "sshd-keygen.service", "ssh-keygen.service"]
SEEDS = ["/var/lib/systemd/random-seed", "/var/lib/dbus/machine-id", "/var/lib/urandom/random-seed"]


class Secrets(Stage):
    name = "secrets"

    def run(self, ctx: Context) -> None:
        g = ctx.state["g"]
        removed: list[str] = []
        for path in [*g.glob_expand("/etc/ssh/ssh_host_*"), *g.glob_expand("/var/lib/entropi/firstboot.*")]:
            g.rm_f(path)
            removed.append(path)
        for path in SEEDS:
            if g.exists(path) or g.is_symlink(path):
                g.rm_f(path)
                removed.append(path)
        write_text(g, "/etc/machine-id", "uninitialized\n", 0o444)
        masked = []
        for unit in REGENERATORS:
            if units.find_unit(g, unit):
                units.mask(g, unit)
                masked.append(unit)
        cmdline_path = f"{ctx.state['boot_mount']}/cmdline.txt"
        cmdline = read_text(g, cmdline_path)
        stripped = cmdline_without_init(cmdline)
        if stripped != cmdline:
            write_text(g, cmdline_path, stripped)
            masked.append("init=/usr/lib/raspberrypi-sys-mods/firstboot (cmdline.txt)")
        ctx.record("secrets", "removed", removed)
        ctx.record("secrets", "regenerators_disabled", masked)
