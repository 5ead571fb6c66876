"""Kernel modules: which RNG module a kernel really has to load, and modules-load.d's file."""

from __future__ import annotations

import re

_MODULE_FILE = re.compile(r"^(?P<name>[^/]+)\.ko(?:\.(?:xz|zst|gz))?$")


def _module_names(paths: list[str] | str) -> set[str]:
    """Module names (underscores) of module files given as paths or modules.builtin text."""
    lines = paths.splitlines() if isinstance(paths, str) else paths
    names = set()
    for p in lines:
        m = _MODULE_FILE.match(p.strip().rsplit("/", 1)[-1])
        if m:
            names.add(m.group("name").replace("-", "_"))
    return names


def _loadable(name: str, module_paths: list[str], modules_builtin: str) -> bool:
    return name in _module_names(module_paths) and name not in _module_names(modules_builtin)


def pick_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """The SoC RNG module to load for one kernel, or None when there is nothing to load.

    ``module_paths`` are module files relative to /lib/modules/<version>/ (any compression);
    ``modules_builtin`` is that kernel's modules.builtin. ``bcm2708_rng`` is the old
    downstream driver (2015-era kernels); ``bcm2835_rng`` is today's, usually built in
    (CONFIG_HW_RANDOM_BCM2835=y), in which case None: built in, it needs no loading.
    """
    for name in ("bcm2708_rng", "bcm2835_rng"):
        if _loadable(name, module_paths, modules_builtin):
            return name
    return None


def pick_tpm_rng_module(module_paths: list[str], modules_builtin: str) -> str | None:
    """``tpm_rng`` on kernels that have it as a module; None otherwise.

    Since Linux 4.x the TPM core registers the TPM's hwrng itself, so newer kernels have
    no tpm_rng and need nothing loaded.
    """
    return "tpm_rng" if _loadable("tpm_rng", module_paths, modules_builtin) else None


def modules_load_conf(modules: list[str]) -> str:
    """Contents of /etc/modules-load.d/entropi-hwrng.conf: a header, then one module a line.

    Names are normalised to underscores and repeated names dropped. They come from the
    image's module files or from ``hwrng.module``, which config.py has validated; anything
    else is a programmer error (ValueError).
    """
    names: list[str] = []
    for m in modules:
        name = m.replace("-", "_")
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ValueError(f"not a kernel module name: {m!r}")
        if name not in names:
            names.append(name)
    head = ("# Written by entropi: load the hardware RNG drivers at boot (systemd-modules-load).\n"
            "# The device tree enables the RNG (dtparam=random=on in config.txt).\n")
    return head + "".join(f"{n}\n" for n in names)
