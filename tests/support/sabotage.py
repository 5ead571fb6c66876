"""Break one property at a time on a COPY of a built image, with libguestfs (the product keeps no
sabotage switch). Each sabotage names the boot-test check it must make fail.

The copy keeps the original's manifest beside it (renamed), so the boot test reads the same
settings and the same base.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from stages.image import units
from stages.image.guest import open_guest
from stages.image.guest_files import read_text, write_text
from stages.image.handle import GuestHandle

Sabotage = Callable[[GuestHandle, str], None]  # (handle with root at / and boot partition at BOOT, BOOT)


def rng_off_in_config(g: GuestHandle, boot: str) -> None:
    """1a: the firmware would turn the RNG off (a last [all] dtparam=random=off)."""
    text = read_text(g, f"{boot}/config.txt")
    write_text(g, f"{boot}/config.txt", text.rstrip("\n") + "\n[all]\ndtparam=random=off\n")


def hwrng_blacklisted(g: GuestHandle, boot: str) -> None:
    """1b (and 5: no /dev/hwrng for rngd): the kernel refuses to load entropi's RNG module."""
    modules = [w.strip() for w in read_text(g, "/etc/modules-load.d/entropi-hwrng.conf").splitlines()
               if w.strip() and not w.startswith("#")]
    cmdline = read_text(g, f"{boot}/cmdline.txt").strip()
    names = ",".join(m.replace("-", "_") for m in modules)
    write_text(g, f"{boot}/cmdline.txt", f"{cmdline} module_blacklist={names}\n")


def wrong_hostname(g: GuestHandle, boot: str) -> None:
    """4: the card takes (and publishes its keys under) another name than the one it was built for."""
    write_text(g, "/etc/hostname", "not-the-recipes-name\n")


def growroot_done(g: GuestHandle, boot: str) -> None:
    """9: entropi-growroot believes it already ran."""
    g.mkdir_p("/var/lib/entropi")
    write_text(g, "/var/lib/entropi/growroot.done", "done\n")


def rngd_on_urandom(g: GuestHandle, boot: str) -> None:
    """5: rngd reads /dev/urandom instead of the hardware RNG."""
    path = "/etc/default/rng-tools-debian"
    write_text(g, path, read_text(g, path).replace("/dev/hwrng", "/dev/urandom"))


def password_logins_on(g: GuestHandle, boot: str) -> None:
    """4: sshd takes passwords although the recipe gave keys (a drop-in read before entropi's)."""
    g.mkdir_p("/etc/ssh/sshd_config.d")
    write_text(g, "/etc/ssh/sshd_config.d/00-passwords.conf", "PasswordAuthentication yes\n")


def no_fsync(g: GuestHandle, boot: str) -> None:
    """6: the first-boot program's fsyncs do nothing (its launcher replaces them before it starts)."""
    path = "/usr/lib/entropi/entropi-firstboot"
    lines = read_text(g, path).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("import sys"))
    lines[at:at] = ["import os", "os.fsync = os.fdatasync = lambda fd: None  # sabotage: nothing is flushed"]
    write_text(g, path, "\n".join(lines) + "\n", 0o755)


NAIVE_KEY_MAKER = """#!/bin/sh
# Sabotage: a key maker that is not crash-safe. It creates each key file (durably) before
# filling it, and keeps any key file it finds; it says what it does as entropi's program does.
for t in {types}; do
  k=/etc/ssh/ssh_host_${{t}}_key
  [ -e "$k" ] && continue
  : > "$k"; sync
  echo "entropi-firstboot: making the $t host key"
  /usr/bin/ssh-keygen -q -N '' -t "$t" -f "$k.new" && mv "$k.new" "$k" && mv "$k.new.pub" "$k.pub"
done
echo "entropi-firstboot: host keys in place; publishing, then committing them"
sync
"""


def naive_key_maker(g: GuestHandle, boot: str) -> None:
    """8: entropi's first-boot program replaced by a key maker that a power cut can leave with a
    broken key (an empty file it then keeps)."""
    config = json.loads(read_text(g, "/etc/entropi/firstboot.json"))
    types = " ".join(k["type"] for k in config["key_types"])
    write_text(g, "/usr/lib/entropi/entropi-firstboot", NAIVE_KEY_MAKER.format(types=types), 0o755)


def no_tpm_driver(g: GuestHandle, boot: str) -> None:
    """T1, T2 and T3 of `boot-test --tpm`: the kernel has no driver for the card's TPM (the boot
    test's TPM reaches the kernel through the vTPM proxy, a Pi's through tpm_tis_spi): the module
    file is gone. depmod's index still names it, so modprobe says "could not insert
    'tpm_vtpm_proxy': Unknown symbol in module" (kmod's words for ENOENT) where a fresh index
    gives "Module tpm_vtpm_proxy not found"; either way no /dev/vtpmx, and the checks' verdicts
    and details were the same in both boots."""
    found = [f"/usr/lib/modules/{p}" for p in g.find("/usr/lib/modules")
             if p.rsplit("/", 1)[-1].startswith("tpm_vtpm_proxy.ko")]
    assert found, "no tpm_vtpm_proxy module in the image"
    for path in found:
        g.rm(path)


TCSD_ON_TPM12 = """# Sabotage: tcsd speaks TPM 1.2 only. On the card's TPM 2.0 (/dev/tpm0) an unmasked tcsd exits
# at its first command, TPM_GetCapability (swtpm answers TPM_RC_VALUE: "TCS GetCapability failed
# with result = 0x84", exit status 132), so it never runs there. Here it gets a TPM 1.2 the way
# trousers reaches a TPM emulator: `tcsd -e` with TCSD_TCP_DEVICE_HOSTNAME/PORT.
[Unit]
Wants=network-online.target
After=network-online.target

[Service]
Environment=TCSD_TCP_DEVICE_HOSTNAME={host} TCSD_TCP_DEVICE_PORT={port}
ExecStart=
ExecStart=/usr/sbin/tcsd -e
"""


def trousers_on(host: str, port: int) -> Sabotage:
    """T4 of `boot-test --tpm`: trousers' tcsd unmasked and enabled (`systemctl unmask trousers tcsd;
    systemctl enable tcsd`), with a TPM 1.2 at ``host``:``port`` to run on (see TCSD_ON_TPM12)."""
    def enable(g: GuestHandle, boot: str) -> None:
        for unit in ("trousers.service", "tcsd.service"):
            units.unmask(g, unit)
        assert units.enable(g, "tcsd.service"), "no tcsd.service in the image"
        g.mkdir_p("/etc/systemd/system/tcsd.service.d")
        write_text(g, "/etc/systemd/system/tcsd.service.d/tpm12.conf", TCSD_ON_TPM12.format(host=host, port=port),
                   0o644)
    return enable


def base_key_files(base: Path) -> dict[str, bytes]:
    """/etc/ssh/ssh_host_* of ``base`` (read-only)."""
    g = open_guest([(base, "raw", True)], str(base))
    try:
        g.mount_ro("/dev/sda2", "/")
        return {path: g.pread(path, g.filesize(path), 0) for path in g.glob_expand("/etc/ssh/ssh_host_*")}
    finally:
        g.close()


def planted_keys(base: Path) -> Sabotage:
    """2, 3 and 7: the host keys of ``base`` put back, and recorded as the committed set, so the
    first-boot guard keeps them on every card."""
    def plant(g: GuestHandle, boot: str) -> None:
        files = base_key_files(base)
        config = json.loads(read_text(g, "/etc/entropi/firstboot.json"))
        keys = []
        for spec in config["key_types"]:
            private = f"/etc/ssh/ssh_host_{spec['type']}_key"
            public = files[private + ".pub"].decode()
            blob = base64.b64decode(public.split()[1])
            sha = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            g.write(private, files[private])
            g.chmod(0o600, private)
            write_text(g, private + ".pub", public, 0o644)
            keys.append({"type": spec["type"], "bits": spec.get("bits"), "file": private,
                         "public": " ".join(public.split()[:2]), "sha256": sha,
                         "fingerprint": f"0 {sha} planted ({spec['type'].upper()})"})
        record = {"version": 1, "keys_source": "made-here", "provisional": False, "provisional_reason": None,
                  "made": {}, "keys": keys}
        g.mkdir_p("/var/lib/entropi")
        write_text(g, "/var/lib/entropi/committed.json", json.dumps(record, indent=2) + "\n", 0o644)
    return plant


def resize_dropped(g: GuestHandle, boot: str) -> None:
    """9 and 11: the initramfs resize is not asked for (``resize`` gone from cmdline.txt)."""
    words = read_text(g, f"{boot}/cmdline.txt").split()
    assert "resize" in words, "the image's cmdline.txt has no resize token to drop"
    write_text(g, f"{boot}/cmdline.txt", " ".join(w for w in words if w != "resize") + "\n")


HOSTILE_FAILING_USER_DATA = """\
#cloud-config
ssh_deletekeys: true
ssh_genkeytypes: [rsa, ecdsa, ed25519]
runcmd:
- [sh, -c, 'echo a runcmd that fails; exit 3']
"""


def hostile_failing_user_data(g: GuestHandle, boot: str) -> None:
    """12: cloud-init's final stage fails (a runcmd exits 3). The same user-data has cloud-init's ssh
    module delete the host keys and make its own in that boot, which the key checks must survive."""
    write_text(g, f"{boot}/user-data", HOSTILE_FAILING_USER_DATA)


def sabotaged_copy(image: Path, dest: Path, name: str, sabotages: list[Sabotage]) -> Path:
    """``dest``/NAME.img: a sparse copy of ``image`` (and its manifest) with ``sabotages`` applied."""
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / f"{name}.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    manifest = image.with_name(image.name.removesuffix(".img") + ".manifest.json")
    if manifest.is_file():
        shutil.copy(manifest, dest / f"{name}.manifest.json")
    boot = json.loads(manifest.read_text()).get("image", {}).get("boot_mount", "/boot/firmware") \
        if manifest.is_file() else "/boot/firmware"
    g = open_guest([(copy, "raw", False)], str(copy))
    try:
        g.mount("/dev/sda2", "/")
        g.mount("/dev/sda1", boot)
        for sabotage in sabotages:
            sabotage(g, boot)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    return copy
