"""A small Raspberry Pi OS-shaped file tree for the fake-backed stage tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.core.config import Config
from stages.core.layers import value_layer
from stages.core.recipe import load_recipe
from stages.core.runner import Context
from tests.conftest import ROOT
from tests.support.fakeguest import FakeGuest

KERNEL = "6.1.0-rpi7-rpi-v8"
BOOT = "/boot/firmware"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForEntropiTestsOnly0000000000000000 test"
HASH = "$6$entropitest$mwUonLwkY0A/84S6vCbkU6hyBPhNtM3zS1yBRTA3DgrAh19VF.ps.2L8THcvuwe6aPZhmBViuhqBnUuWlOX7s."
UNIT = "[Unit]\nDescription={0}\n\n[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\npi:$6$old$old:19000:0:99999:7:::\n",
    "etc/group": "root:x:0:\nsudo:x:27:pi\npi:x:1000:\n",
    "etc/gshadow": "root:*::\nsudo:*::pi\npi:!::\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n",
    "etc/hostname": "raspberrypi\n",
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "etc/ssh/ssh_host_ed25519_key": "PRIVATE\n",
    "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA baked\n",
    "var/lib/systemd/random-seed": "seed",
    "var/lib/entropi/firstboot.done": "",
    "var/lib/entropi/committed.json": "{}",
    "usr/bin/python3": "",
    "var/lib/dpkg/status": "",
    "etc/default/rng-tools-debian": "#HRNGDEVICE=/dev/hwrng\n",
    "home/pi/.bashrc": "# pi\n",
    "etc/skel/.bashrc": "# skel\n",
    "lib/systemd/system/ssh.service": UNIT.format("OpenBSD Secure Shell server"),
    "lib/systemd/system/rng-tools-debian.service": UNIT.format("rngd"),
    "lib/systemd/system/regenerate_ssh_host_keys.service": UNIT.format("Regenerate SSH host keys"),
    "usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys": "#!/bin/sh\nssh-keygen -A\n",
    f"lib/modules/{KERNEL}/kernel/drivers/char/hw_random/bcm2708-rng.ko.xz": "",
    f"lib/modules/{KERNEL}/modules.builtin": "kernel/drivers/char/hw_random/rng-core.ko\n",
}
BOOT_FILES = {
    "config.txt": "# For more options\ndtparam=audio=on\n\n[all]\n",
    "cmdline.txt": "console=serial0,115200 root=PARTUUID=abcd-02 rootwait\n",
}


def make_image(top: Path) -> FakeGuest:
    """The tree above under ``top``, mounted in a FakeGuest (boot partition at BOOT)."""
    g = FakeGuest.image(top, BOOT)
    for rel, content in FILES.items():
        path = top / "root" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (top / "root" / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    for rel, content in BOOT_FILES.items():
        (top / "boot" / rel).write_text(content)
    return g


def config(**overrides: Any) -> Config:
    """The shipped arm64 recipe with dotted-key overrides (``users__name="alice"``)."""
    values = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_recipe(ROOT / "recipes" / "debian-arm64.toml", extra=[value_layer("test", values)])


def context(tmp: Path, g: FakeGuest | None, cfg: Config | None = None) -> Context:
    """A Context as the stages after ``open libguestfs`` see it."""
    ctx = Context(config=cfg or config(), out_dir=tmp / "out", work_dir=tmp / "work")
    ctx.state.g = g
    ctx.state.boot_mount = BOOT
    ctx.state.kernels = [KERNEL]
    ctx.state.image = tmp / "out" / "work.img"
    return ctx
