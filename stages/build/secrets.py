"""Secrets: no pre-baked host keys, seed or machine-id; only entropi makes host keys.

Runs after every package step (openssh's postinst makes keys). /etc/machine-id becomes
`uninitialized`, which makes systemd treat the next boot as the first one. Raspberry Pi
OS's regenerator script is diverted (dpkg-divert, local) and replaced by one that defers to
entropi: its `init=` first-boot script keeps doing the rest of its work (new PARTUUIDs,
expanding the root file system), but makes no keys.
"""

from __future__ import annotations

from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image import units
from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle
from stages.textedit.services import RPI_REGENERATOR, deferring_regenerator, with_diversion

REGENERATORS = ["regenerate_ssh_host_keys.service", "sshd-keygen.service", "ssh-keygen.service"]
SEEDS = ["/var/lib/systemd/random-seed", "/var/lib/dbus/machine-id", "/var/lib/urandom/random-seed"]


class Secrets(Stage):
    name = "secrets"
    reads = frozenset({"g"})

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        removed: list[str] = []
        entropi_state = [*g.glob_expand("/var/lib/entropi/firstboot.*"), *g.glob_expand("/var/lib/entropi/committed.*")]
        for path in [*g.glob_expand("/etc/ssh/ssh_host_*"), *entropi_state]:
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
        if self._defer_regenerator(g):
            masked.append(f"{RPI_REGENERATOR} (diverted to {RPI_REGENERATOR}.distrib)")
        ctx.record("secrets", "removed", removed)
        ctx.record("secrets", "regenerators_disabled", masked)

    @staticmethod
    def _defer_regenerator(g: GuestHandle) -> bool:
        """Divert Raspberry Pi OS's key script and put a deferring one in its place."""
        if not g.is_file(RPI_REGENERATOR):
            return False
        diversions_path = "/var/lib/dpkg/diversions"
        diversions = read_text(g, diversions_path) if g.is_file(diversions_path) else ""
        updated = with_diversion(diversions, RPI_REGENERATOR, f"{RPI_REGENERATOR}.distrib")
        if updated != diversions:  # not diverted yet: keep the packaged script as .distrib
            g.mv(RPI_REGENERATOR, f"{RPI_REGENERATOR}.distrib")
            write_text(g, diversions_path, updated, 0o644)
        write_text(g, RPI_REGENERATOR, deferring_regenerator(RPI_REGENERATOR), 0o755)
        return True
