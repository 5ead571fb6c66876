"""cloud-init's system configuration for an image whose accounts entropi has set, and the NoCloud
seed edits a flash makes on a card (meta-data, the cmdline.txt token)."""

from __future__ import annotations

import json
import re

# Read after every other cloud.cfg.d file (cloud-init: later names trump earlier ones),
# Raspberry Pi OS's 99_raspberry-pi.cfg included.
DROPIN = "/etc/cloud/cloud.cfg.d/99_zz-entropi.cfg"


def accounts_dropin(user: str) -> str:
    """Contents of DROPIN: cloud-init leaves the recipe's accounts as the build made them.

    ``users: []``: no user is created or changed at first boot unless user-data names one
    (Debian's cloud.cfg says ``users: [default]``, whose ``lock_passwd`` would lock the
    recipe's password). The default user is the recipe's user, so user-data that says
    ``default`` or gives top-level ``ssh_authorized_keys`` means that account;
    ``lock_passwd: false`` keeps its password hash (cloud-init then unlocks only a hash that
    is there, and never blanks one). User-data still wins over all of this.
    """
    return ("#cloud-config\n"
            "# Written by entropi: the build set this image's accounts (recipe [users]); cloud-init\n"
            "# creates or changes none unless user-data names them.\n"
            "users: []\n"
            "system_info:\n"
            "  default_user:\n"
            f"    name: {json.dumps(user)}\n"
            "    lock_passwd: false\n")


# Top-level meta-data keys a flash rewrites; the image's other keys (dsmode) and comments stay.
# ``instance_id`` is the spelling Raspberry Pi OS's seed has used; cloud-init reads ``instance-id``.
_INSTANCE_ID = re.compile(r"^(instance-id|instance_id)\s*:")
_LOCAL_HOSTNAME = re.compile(r"^local-hostname\s*:")


def meta_data(text: str, instance_id: str, hostname: str | None) -> str:
    """The seed's meta-data with ``instance-id`` (and, given one, ``local-hostname``) set: lines of
    the image's own for these keys go, the rest is kept, the new values come last."""
    drop = [_INSTANCE_ID, *([_LOCAL_HOSTNAME] if hostname else [])]
    kept = [line for line in text.splitlines() if not any(key.match(line) for key in drop)]
    while kept and not kept[-1].strip():
        kept.pop()
    new = [f"instance-id: {instance_id}"] + ([f"local-hostname: {hostname}"] if hostname else [])
    return "\n".join([*kept, *new]) + "\n"


def cmdline_ds(text: str, instance_id: str) -> str:
    """cmdline.txt (one line) with ``ds=nocloud;i=<instance_id>`` last, in place of any earlier ``ds=``
    token: cloud-init takes the instance-id from the command line before meta-data's."""
    tokens = [t for t in text.split() if not t.startswith("ds=")]
    return " ".join([*tokens, f"ds=nocloud;i={instance_id}"]) + "\n"
