"""cloud-init's system configuration for an image whose accounts entropi has set."""

from __future__ import annotations

import json

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
