"""Install packages inside the image through a qemu-user chroot (libguestfs refuses ARM).

The chroot starts no daemons (policy-rc.d), uses the host's resolv.conf and restores the
image's own afterwards, and always unmounts proc/sys/dev, also after a failure.

Where the host has apt (Debian, Ubuntu), the host's apt reads the image's sources, keys
and dpkg database (APT_CONFIG with Dir= the image) and does the index download, parsing
and dependency resolution natively; dpkg and the maintainer scripts still run inside
the chroot (DPkg::Chroot-Directory), as mmdebstrap does. Emulated apt spends most of its
time parsing the package index. If the host's apt cannot read the image's sources (for
example a signed-by= key that exists only inside the image), apt runs in the chroot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from stages.core.config import Config
from stages.core.errors import UserError
from stages.core.processes import CommandFailed, run, text
from stages.core.runner import Context, Stage
from stages.core.state import need
from stages.image.chroot import APT_FAST, DPKG_FAST, ENV, FIX_BINFMT, host_env, require_binfmt


def wanted_packages(config: Config) -> list[str]:
    pkgs = [] if config.rngd.package == "none" else [config.rngd.package]
    return [*pkgs, *config.packages.install]


class Packages(Stage):
    name = "packages"
    reads = frozenset({"root", "arch"})
    provides = frozenset({"chroot_mounts", "policy", "resolv"})

    def skip(self, config: Config) -> str | None:
        if wanted_packages(config) or config.packages.local_debs:
            return None
        return "nothing to install (rngd.package, packages.install and packages.local_debs are empty)"

    def tools(self, config: Config) -> list[str]:
        return ["chroot", "mount", "umount", "dpkg-query"]

    def check(self, ctx: Context) -> None:
        if not Path("/proc/sys/fs/binfmt_misc/status").exists():
            raise UserError("packages", "binfmt_misc is not mounted, ARM programs cannot run", hint=FIX_BINFMT)
        debs = ctx.config.packages.local_debs
        if debs and not list(Path(debs).glob("*.deb")):
            raise UserError(str(ctx.config.recipe), f"no .deb files in {debs}", key="packages.local_debs",
                            hint="point it at a directory holding .deb files")

    def run(self, ctx: Context) -> None:
        pkgs = wanted_packages(ctx.config)
        debs = sorted(Path(ctx.config.packages.local_debs).glob("*.deb")) if ctx.config.packages.local_debs else []
        root = need(ctx.state.root, "root")
        arch = need(ctx.state.arch, "arch")
        require_binfmt("packages", arch)
        self._enter(ctx, root)
        if debs:
            inside = root / "tmp" / "entropi-debs"
            inside.mkdir(parents=True, exist_ok=True)
            for deb in debs:
                shutil.copy2(deb, inside / deb.name)
            self._apt(ctx, root, ["apt-get", "install", "-y", "--no-install-recommends",
                                  *[f"/tmp/entropi-debs/{d.name}" for d in debs]])
            shutil.rmtree(inside)
        if pkgs:
            host = self._host_apt_config(ctx, root, arch)
            ctx.record("packages", "apt", "host apt, dpkg in the chroot" if host else "apt in the chroot")
            if host is None:  # (the host's apt has just updated the image's lists)
                self._apt(ctx, root, ["apt-get", "update", "-q", *APT_FAST])
            self._apt(ctx, root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_FAST,
                                  *DPKG_FAST, *pkgs], host)
        self._apt(ctx, root, ["apt-get", "clean"])
        versions = text(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\\n",
                         *[p for p in pkgs], *[d.name.split("_")[0] for d in debs]])
        ctx.record("packages", "installed", dict(line.split(" ", 1) for line in versions.splitlines() if " " in line))
        self._leave(ctx)

    def _host_apt_config(self, ctx: Context, root: Path, arch: str) -> Path | None:
        """An APT_CONFIG that points the host's apt at the image, if the host's apt can use it."""
        if shutil.which("apt-get") is None or os.environ.get("ENTROPI_HOST_APT") == "0":
            return None
        conf = ctx.work_dir.resolve() / "apt.conf"
        root = root.resolve()
        conf.write_text(f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
                        f'APT::Architecture "{arch}";\nAPT::Architectures {{ "{arch}"; }};\n'
                        f'DPkg::Chroot-Directory "{root}";\nAPT::Sandbox::User "root";\n')
        probe = subprocess.run(["apt-get", "update", "-q", *APT_FAST], env=host_env(conf),
                               capture_output=True, text=True)
        if probe.returncode != 0 or "W: " in probe.stderr or "E: " in probe.stderr:
            (ctx.work_dir / "host-apt.log").write_text(probe.stdout + probe.stderr)
            return None
        return conf

    def _apt(self, ctx: Context, root: Path, argv: list[str], host: Path | None = None) -> None:
        try:
            if host is not None:
                run(argv, env=host_env(host))
            else:
                run(["chroot", str(root), *argv], env=ENV)
        except CommandFailed as e:
            if "No space left on device" in e.stderr:
                raise UserError(str(ctx.config.recipe), "the root file system ran out of space installing packages",
                                key="image.grow", hint="raise image.grow, e.g. \"+1G\"") from None
            raise

    def _enter(self, ctx: Context, root: Path) -> None:
        mounts = ctx.state.chroot_mounts
        for src, dst, args in (("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs"]),
                               ("/dev", "dev", ["--bind"]), ("devpts", "dev/pts", ["-t", "devpts"])):
            target = root / dst
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", *args, src, str(target)])
            mounts.append(target)
        policy = root / "usr/sbin/policy-rc.d"
        if policy.exists() or policy.is_symlink():
            policy.rename(policy.with_name("policy-rc.d.entropi-saved"))
        policy.write_text("#!/bin/sh\n# entropi: start no daemons while building\nexit 101\n")
        policy.chmod(0o755)
        ctx.state.policy = policy
        resolv = root / "etc/resolv.conf"
        if resolv.exists() or resolv.is_symlink():
            resolv.rename(resolv.with_name("resolv.conf.entropi-saved"))
        if Path("/etc/resolv.conf").exists():
            shutil.copyfile("/etc/resolv.conf", resolv)
        ctx.state.resolv = resolv

    def _leave(self, ctx: Context) -> None:
        mounts, ctx.state.chroot_mounts = ctx.state.chroot_mounts, []
        for target in reversed(mounts):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
        saved_paths = (ctx.state.policy, ctx.state.resolv)
        ctx.state.policy = ctx.state.resolv = None
        for path in saved_paths:
            if path is None:
                continue
            if path.exists() or path.is_symlink():
                path.unlink()
            saved = path.with_name(path.name + ".entropi-saved")
            if saved.exists() or saved.is_symlink():
                os.rename(saved, path)

    def teardown(self, ctx: Context) -> None:
        self._leave(ctx)
