"""Install entropi's first-boot unit (firstboot/) with its settings from the recipe."""

from __future__ import annotations

import json

from stages.core.errors import UserError
from stages.core.paths import FIRSTBOOT
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image import units
from stages.image.guest_files import put_file, write_text
from stages.image.handle import GuestHandle

PROGRAM = "/usr/lib/entropi/entropi-firstboot"  # the launcher; it imports the package next to it
GUARD = "/usr/lib/entropi/entropi-guard"  # the unit's ExecStart: the quick check, else the launcher
PACKAGE = "entropi_firstboot"  # the program's modules: firstboot/entropi_firstboot/ -> PACKAGE_DIR
PACKAGE_DIR = f"/usr/lib/entropi/{PACKAGE}"
PACKAGE_FILES = ("__init__.py", "committed.py", "config.py", "device.py", "entropy.py", "fileops.py",
                 "hostname.py", "keys.py", "main.py", "publish.py", "quick.py", "run.py", "seams.py", "sshkey.py")
UNIT = "entropi-firstboot.service"
# Orders socket activation's per-connection sshd (ssh@.service instances) after the guard.
SSH_INSTANCE_DROPIN = ("entropi-firstboot-ssh@.conf", "/etc/systemd/system/ssh@.service.d/entropi-firstboot.conf")


def install(g: GuestHandle, name: str, dest: str, mode: int) -> None:
    """Copy firstboot/NAME into the image at ``dest`` with ``mode``."""
    put_file(g, FIRSTBOOT / name, dest, mode)


def firstboot_settings(ctx: Context) -> dict[str, object]:
    ssh, fb = ctx.config.ssh, ctx.config.firstboot
    bits = {"rsa": ssh.rsa_bits, "ecdsa": ssh.ecdsa_bits}
    return {
        "key_types": [{"type": t, **({"bits": bits[t]} if t in bits else {})} for t in ssh.key_types],
        "wait_timeout": fb.wait_timeout, "on_timeout": fb.on_timeout, "min_entropy": fb.min_entropy,
        "boot_dir": need(ctx.state.boot_mount, "boot_mount"),
    }


class FirstbootUnit(Stage):
    name = "first-boot unit"
    reads = frozenset({"g", "boot_mount", "image"})

    def check(self, ctx: Context) -> None:
        package = [f"{PACKAGE}/{name}" for name in PACKAGE_FILES]
        for name in ("entropi-firstboot", "entropi-guard", *package, UNIT, SSH_INSTANCE_DROPIN[0]):
            if not (FIRSTBOOT / name).is_file():
                raise UserError(str(FIRSTBOOT), f"{name} is missing", hint="restore firstboot/ from git")

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        if not g.exists("/usr/bin/python3") and not g.exists("/bin/python3"):
            raise UserError(str(ctx.state.image), "the image has no python3 for the first-boot unit",
                            key="packages.install", hint="add python3-minimal to packages.install")
        g.mkdir_p("/usr/lib/entropi")
        install(g, "entropi-firstboot", PROGRAM, 0o755)
        install(g, "entropi-guard", GUARD, 0o755)
        g.mkdir_p(PACKAGE_DIR)
        g.chmod(0o755, PACKAGE_DIR)
        for name in PACKAGE_FILES:
            install(g, f"{PACKAGE}/{name}", f"{PACKAGE_DIR}/{name}", 0o644)
        install(g, UNIT, f"/etc/systemd/system/{UNIT}", 0o644)
        g.mkdir_p("/etc/systemd/system/ssh@.service.d")
        install(g, *SSH_INSTANCE_DROPIN, 0o644)
        settings = firstboot_settings(ctx)
        g.mkdir_p("/etc/entropi")
        write_text(g, "/etc/entropi/firstboot.json", json.dumps(settings, indent=2) + "\n", 0o644)
        timeout = int(ctx.config.firstboot.wait_timeout) + 900
        if timeout > 1200:
            g.mkdir_p(f"/etc/systemd/system/{UNIT}.d")
            write_text(g, f"/etc/systemd/system/{UNIT}.d/timeout.conf", f"[Service]\nTimeoutStartSec={timeout}\n")
        units.enable(g, UNIT)
        ctx.record("firstboot", "settings", settings)
