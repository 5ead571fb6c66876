"""Hardware RNG: dtparam=random=on, the module the kernel really has, TPM HAT, rngd config."""

from __future__ import annotations

from stages.core.checks import fill_watermark, kernel_poolsize, min_entropy_reachable
from stages.core.errors import UserError
from stages.core.paths import FIRSTBOOT
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image import units
from stages.image.guest_files import put_file, read_text, write_text
from stages.image.handle import GuestHandle
from stages.textedit.config_txt import enable_hwrng_config
from stages.textedit.modules import modules_load_conf, pick_rng_module, pick_tpm_rng_module
from stages.textedit.services import rngd_defaults

TPM_LINES = {"slb9670": ["dtparam=spi=on", "dtoverlay=tpm-slb9670"]}
RNGD_FILES = {"rng-tools-debian": "/etc/default/rng-tools-debian", "rng-tools5": "/etc/default/rng-tools"}
RNGD_UNITS = ["rng-tools-debian.service", "rngd.service", "rng-tools.service"]
# The hw_random core and rngd read only the current hwrng, and a TPM registered after the
# board's RNG with the same quality never becomes current (README: "The TPM as a second
# RNG"): the feeder reads the TPM through /dev/tpmrm0 and credits the kernel itself.
TPM_FEEDER = ("entropi-tpm-feed", "/usr/lib/entropi/entropi-tpm-feed")
TPM_FEEDER_UNIT = "entropi-tpm-feed.service"


def module_listing(g: GuestHandle, version: str) -> tuple[list[str], str]:
    base = f"/lib/modules/{version}"
    # Every RNG driver we load (bcm2708_rng, bcm2835_rng, tpm_rng) lives in hw_random; one
    # glob instead of listing the whole tree keeps this fast through the appliance.
    paths = [p.removeprefix(base + "/") for p in g.glob_expand(f"{base}/kernel/drivers/char/hw_random/*")
             if ".ko" in p] if g.is_dir(base) else []
    builtin = read_text(g, f"{base}/modules.builtin") if g.is_file(f"{base}/modules.builtin") else ""
    return paths, builtin


def install_tpm_feeder(ctx: Context, g: GuestHandle) -> None:
    """firstboot/entropi-tpm-feed and its unit, enabled: the TPM's bytes reach the kernel whichever hwrng is current."""
    g.mkdir_p("/usr/lib/entropi")
    put_file(g, FIRSTBOOT / TPM_FEEDER[0], TPM_FEEDER[1], 0o755)
    put_file(g, FIRSTBOOT / TPM_FEEDER_UNIT, f"/etc/systemd/system/{TPM_FEEDER_UNIT}", 0o644)
    units.enable(g, TPM_FEEDER_UNIT)
    ctx.record("hwrng", "tpm_feeder", {"program": TPM_FEEDER[1], "unit": TPM_FEEDER_UNIT, "device": "/dev/tpmrm0"})


class Hwrng(Stage):
    name = "hardware RNG"
    reads = frozenset({"g", "boot_mount", "kernels", "image"})

    def run(self, ctx: Context) -> None:
        g = need(ctx.state.g, "g")
        cfg = ctx.config
        boot = need(ctx.state.boot_mount, "boot_mount")
        if cfg.hwrng.enable or cfg.hwrng.tpm:
            path = f"{boot}/config.txt"
            before = read_text(g, path)
            after = enable_hwrng_config(before, TPM_LINES.get(cfg.hwrng.tpm, []))
            if after != before:
                write_text(g, path, after)
            ctx.record("hwrng", "config_txt_changed", after != before)
        modules: list[str] = []
        per_kernel: dict[str, str | None] = {}
        for version in need(ctx.state.kernels, "kernels"):
            paths, builtin = module_listing(g, version)
            chosen = pick_rng_module(paths, builtin) if cfg.hwrng.module == "auto" else cfg.hwrng.module
            per_kernel[version] = chosen or "built in"
            if chosen and cfg.hwrng.enable and chosen not in modules:
                modules.append(chosen)
            if cfg.hwrng.tpm:
                tpm = pick_tpm_rng_module(paths, builtin)
                if tpm and tpm not in modules:
                    modules.append(tpm)
        ctx.record("hwrng", "module", per_kernel)
        conf = "/etc/modules-load.d/entropi-hwrng.conf"
        if modules:
            g.mkdir_p("/etc/modules-load.d")
            write_text(g, conf, modules_load_conf(modules), 0o644)
        elif g.exists(conf):
            g.rm(conf)
        if cfg.hwrng.tpm:
            for unit in ("trousers.service", "tcsd.service"):
                if units.find_unit(g, unit):
                    units.mask(g, unit)
                    ctx.record("hwrng", "disabled", [*ctx.manifest.get("hwrng", {}).get("disabled", []), unit])
            install_tpm_feeder(ctx, g)
        self._rngd(ctx, g)

    def _rngd(self, ctx: Context, g: GuestHandle) -> None:
        pkg = ctx.config.rngd.package
        if pkg == "none":
            return
        kernels = need(ctx.state.kernels, "kernels")
        pool = kernel_poolsize(kernels[-1]) if kernels else 256
        fill = fill_watermark(pool, ctx.config.rngd.fill_percent)
        self._check_min_entropy(ctx, kernels, fill)
        write_text(g, RNGD_FILES[pkg], rngd_defaults(pkg, ctx.config.rngd.device, fill), 0o644)
        unit = next((u for u in RNGD_UNITS if units.find_unit(g, u)), None)
        if unit:
            units.enable(g, unit)
        else:  # rng-tools-debian ships a SysV script: enabled by its rc?.d links
            script = next((s for s in ("rng-tools-debian", "rng-tools") if g.exists(f"/etc/init.d/{s}")), None)
            if script and not g.glob_expand(f"/etc/rc2.d/S*{script}"):
                raise UserError(str(ctx.state.image), f"{script} is installed but not enabled",
                                key="rngd.package", hint="reinstall it, or choose rngd.package = \"rng-tools5\"")
            unit = f"{script}.service (SysV)" if script else None
        ctx.record("rngd", "config", {"file": RNGD_FILES[pkg], "device": ctx.config.rngd.device, "fill_bits": fill,
                                      "poolsize": pool, "unit": unit})

    @staticmethod
    def _check_min_entropy(ctx: Context, kernels: list[str], fill: int) -> None:
        """The recipe check assumed the watermark of a 4096-bit pool; rngd gets the watermark of the
        image's newest kernel (by name). A kernel with a 4096-bit pool waits for min_entropy, and
        rngd stops at that watermark: refuse a min_entropy it can never reach."""
        percent, min_entropy = ctx.config.rngd.fill_percent, ctx.config.firstboot.min_entropy
        source = (f"rngd.fill_percent = {percent} of the {kernel_poolsize(kernels[-1])}-bit pool of kernel "
                  f"{kernels[-1]}, which rngd is set up for" if kernels else "")
        for version in kernels:
            if kernel_poolsize(version) == 256:
                continue
            problem = min_entropy_reachable(min_entropy, fill, f"{source}; kernel {version} waits for min_entropy",
                                            percent)
            if problem:
                raise UserError(str(ctx.config.recipe), problem[0], key="firstboot.min_entropy", hint=problem[1])
