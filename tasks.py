"""entropi tasks. `invoke --list` is the menu; `invoke --help TASK` explains a task.

Tasks are thin: they parse options, call into stages/, and turn user errors into a
one-line `error: ...` and exit code 2.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from stages.core.errors import Interrupted, UserError  # noqa: E402

DEFAULT_RECIPE = "pipeline.toml"
SET_HELP = ("Change one recipe setting: KEY=VALUE, KEY dotted as in the recipe (output.name), VALUE a TOML "
            "value or a bare word; repeatable, e.g. --set output.name=lab "
            "--set users.authorized_keys='[\"~/.ssh/id_ed25519.pub\"]'")
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Render UserError as one line with exit code 2; Ctrl-C as exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise Exit(e.render(), code=e.exit_code) from None
        except (KeyboardInterrupt, Interrupted):
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def _pytest(c: Context, *args: str) -> None:
    c.run(shlex.join([sys.executable, "-m", "pytest", *args]), pty=False)


@task(help={"recipe": "Recipe file (TOML). Default: pipeline.toml", "set": SET_HELP}, iterable=["set"])
@user_errors
def recipe_check(c: Context, recipe: str = DEFAULT_RECIPE, set: list[str] | None = None) -> None:
    """Validate a recipe (with the recipes it extends and --set) and print its resolved settings."""
    from stages.core.recipe import load_recipe, resolved_toml

    print(resolved_toml(load_recipe(recipe, set or [])))


@task(help={"recipe": "Recipe file (TOML). Default: pipeline.toml (official Raspberry Pi OS Lite, arm64)",
            "out": "Output directory (default: the recipe's output.dir, 'out')", "set": SET_HELP},
      iterable=["set"])
@user_errors
def build(c: Context, recipe: str = DEFAULT_RECIPE, out: str = "", set: list[str] | None = None) -> None:
    """Build a flash-ready image from a recipe: out/NAME.img, .bmap, compressed copy, .sha256, manifest.

    Fetches (or builds) the base, never modifies the cache, enables the hardware RNG and
    rng-tools, strips every pre-baked secret, sets accounts and SSH, and installs the
    first-boot unit that makes host keys once the kernel has entropy.
    """
    from stages.build.pipeline import build as run_build
    from stages.core.recipe import load_recipe

    config = load_recipe(recipe, set or [])
    manifest = run_build(config, Path(out or config.output.dir))
    for name, info in manifest.get("outputs", {}).items():
        print(f"{info['path']}  ({info['bytes']} bytes)" if name.endswith(".img") else info["path"])


@task(help={"recipe": "Recipe file (TOML) whose [base] names the image. Default: pipeline.toml",
            "verify": "Re-hash cached files (and re-check the signature) instead of trusting size and sidecar",
            "set": SET_HELP}, iterable=["set"])
@user_errors
def fetch(c: Context, recipe: str = DEFAULT_RECIPE, verify: bool = False, set: list[str] | None = None) -> None:
    """Download (or reuse from ~/.cache/entropi/downloads), verify and unpack the recipe's base; print its path.

    Handles base.release (Raspberry Pi Imager catalogue), base.url (+ sha256 or sha256_url,
    optional signature_url + signing_key) and base.path. Interrupted downloads resume.
    """
    from stages.core.recipe import load_recipe
    from stages.source.fetch import fetch_base

    print(fetch_base(load_recipe(recipe, set or []), full_verify=verify))


@task(help={"image": "Built image (out/NAME.img); its manifest gives arch and user",
            "recipe": "Build this recipe first, then boot-test its output",
            "key": "Private SSH key whose .pub is in the recipe's users.authorized_keys (for the login check); "
                   "with --recipe and no --key a throwaway key is made and added to the build",
            "set": SET_HELP + " (with --recipe)",
            "tpm": "Instead: one boot under -M virt with an emulated TPM 2.0 (swtpm) and a virtio RNG, counting "
                   "what each delivered (Debian-built arm64 images only); report in out/NAME.tpm-report.json",
            "cards": "Which cards to boot, comma-separated (default B,A,C, seven boots): B the examined first boot; "
                     "A a power cut after the first-boot unit, then two later boots; C two power cuts while keys "
                     "are made. The checks of cards not booted say N/A"},
      iterable=["set"])
@user_errors
def boot_test(c: Context, image: str = "", recipe: str = "", key: str = "", set: list[str] | None = None,
              tpm: bool = False, cards: str = "") -> None:
    """Boot the image under QEMU (raspi3b/raspi2b) and prove its properties over SSH.

    Writes out/NAME.boot-report.json and out/NAME.boot.log; exits 1 when a check fails.
    Cards are qcow2 overlays: the image itself is never changed. --tpm: the TPM boot instead.
    """
    from stages.boottest.run import boot_test as run_boot_test
    from stages.boottest.verdict import summary

    if tpm:
        from stages.boottest.tpm import run_tpm
        from stages.boottest.tpm import summary as tpm_summary

        report = run_tpm(image, recipe, set or [])
        print(tpm_summary(report))
        if not report["passed"]:
            raise Exit("boot-test --tpm: some checks failed (see out/*.tpm-report.json)", code=1)
        return

    report = run_boot_test(image, recipe, key, set or [], cards)
    print(summary(report))
    if not report["passed"]:
        raise Exit("boot-test: some checks failed (see the report above and out/*.boot-report.json)", code=1)


@task(help={"arch": "arm64 (boot partition at /boot/firmware) or armhf (legacy layout, /boot)",
            "suite": "Debian suite: bookworm or trixie", "mirror": "Debian mirror",
            "all": "Build every base the offline recipes and the tests use (bookworm arm64 and armhf, trixie "
                   "arm64) side by side, one process each"})
@user_errors
def base_image(c: Context, arch: str = "arm64", suite: str = "bookworm",
               mirror: str = "http://deb.debian.org/debian", all: bool = False) -> None:
    """Build (or reuse from ~/.cache/entropi/base) a Pi-style image from Debian packages; print its path."""
    from stages.source.debian_base import BaseSpec, ensure_base

    if all:
        from stages.source.base_set import ALL, build_all

        for spec, path, seconds in build_all([BaseSpec(a, s, mirror) for a, s in ALL]):
            print(f"{spec.suite:<9} {spec.arch:<6} {path}" + (f"  (built in {seconds:.0f}s)" if seconds else ""))
        return
    if arch not in ("arm64", "armhf"):
        raise UserError("base-image", f"--arch {arch!r} is not supported", hint="use arm64 or armhf")
    if suite not in ("bookworm", "trixie"):
        raise UserError("base-image", f"--suite {suite!r} is not supported", hint="use bookworm or trixie")
    print(ensure_base(BaseSpec(arch, suite, mirror)))


@task(help={"image": "Image to write: out/NAME.img, .img.xz or .img.zst (NAME.img.bmap beside it is used)",
            "device": "A card's whole device, e.g. /dev/sdX or /dev/mmcblkN; repeat it to write several cards at "
                      "once (with --to-file: the one file to write)",
            "yes": "Do not ask for confirmation",
            "to_file": "Write an image file (sparse) instead of a block device",
            "force_non_removable": "Allow a device whose sysfs 'removable' flag is 0 (never the running system)",
            "hostname": "Per-card hostname, written to <boot>/entropi/hostname for the first boot (and with cloud-init "
                        "to its seed's meta-data): a name, a comma list (one per --device), or a pattern of the "
                        "card's number n, e.g. pi-{n:02}",
            "first": "The n of the first card in a --hostname pattern (default 1)",
            "host_keys": "Make each card's SSH host keys now, on this host (the image's key types), write them "
                         "to the card and add them to --known-hosts under its --hostname; its first boot keeps them",
            "known_hosts": "With --host-keys: the known_hosts file to update (default out/known_hosts)",
            "sshfp": "With --host-keys: the file of the cards' SSHFP records (default out/sshfp.zone)",
            "user_data": "A #cloud-config file for cloud-init, put on every card's boot partition as user-data "
                         "(images with cloud-init only), with a fresh instance-id per card"},
      iterable=["device"])
@user_errors
def flash(c: Context, image: str, device: list[str] | None = None, yes: bool = False, to_file: bool = False,
          force_non_removable: bool = False, hostname: str = "", first: int = 1, host_keys: bool = False,
          known_hosts: str = "", sshfp: str = "", user_data: str = "") -> None:
    """Write an image to SD cards (mapped blocks only when a .bmap exists), several at once, each read back.

    Refuses mounted devices, the disk that runs this computer, non-removable disks (unless
    --force-non-removable), cards smaller than the image, and asks before writing unless --yes;
    one refused device and nothing is written. With cloud-init in the image, --hostname and --user-data go
    into its NoCloud seed with a fresh instance-id per card. Prints a table of the cards; exits 1 if any failed.
    """
    from stages.flash.fleet import CardResult, flash_cards, hostnames, table
    from stages.flash.hostkeys import plan_host_keys
    from stages.flash.write import flash as flash_file

    targets = [Path(d) for d in device or []]
    if not targets:
        raise UserError("flash", "no --device given", hint="name the card: --device /dev/sdX (repeat for several)")
    if to_file and len(targets) > 1:
        raise UserError("flash", f"--to-file writes one file, {len(targets)} were given", hint="give one --device")
    if (known_hosts or sshfp) and not host_keys:
        raise UserError("flash", "--known-hosts and --sshfp go with --host-keys", hint="add --host-keys")
    seed = Path(user_data) if user_data else None
    keys = plan_host_keys(Path(image), known_hosts=Path(known_hosts) if known_hosts else None,
                          sshfp=Path(sshfp) if sshfp else None) if host_keys else None
    if to_file:
        name = hostnames(hostname, 1, first)[0]
        report = flash_file(Path(image), targets[0], yes=yes, to_file=True, force_non_removable=False, hostname=name,
                            host_keys=keys, user_data=seed)
        results = [CardResult(str(targets[0]), "", name, report["bytes_written"], report["seconds"], True)]
    else:
        results = flash_cards(Path(image), targets, yes=yes, force_non_removable=force_non_removable,
                              hostname=hostname, first=first, host_keys=keys, user_data=seed)
    print(table(results))
    failed = sum(not r.verified for r in results)
    if failed:
        raise Exit(f"flash: {failed} of {len(results)} cards failed (see the table above)", code=1)


@task
def recipe_doc(c: Context) -> None:
    """Print every recipe setting with its default and help."""
    from stages.core.recipe import describe_settings

    print(describe_settings())


@task(help={"fast": "Unit tests and linters only (seconds, no root).", "k": "Only tests matching this expression."})
def test(c: Context, fast: bool = False, k: str = "") -> None:
    """Run the test suite (all of it: unit, lint, first-boot element, integration, boot)."""
    paths = ["tests/unit", "firstboot/tests"] if fast else ["tests", "firstboot/tests"]
    _pytest(c, *paths, *(["-k", k] if k else []))


@task
def lint(c: Context) -> None:
    """Run ruff and mypy (strict on stages/)."""
    _pytest(c, "tests/unit/test_lint.py")


@task(help={"all": "Also remove the cache (~/.cache/entropi): base images and downloads."})
def clean(c: Context, all: bool = False) -> None:
    """Remove out/ and temporary files; with --all also the cache."""
    for path in [ROOT / "out", ROOT / ".pytest_cache", ROOT / ".mypy_cache", ROOT / ".ruff_cache"]:
        if path.exists():
            shutil.rmtree(path)
            print(f"removed {path}")
    if all:
        from stages.core.files import cache_dir

        cache = cache_dir()
        if cache.exists():
            shutil.rmtree(cache)
            print(f"removed {cache}")


@task(help={"only": "Comma-separated parts to run (default: all of bench/*.py), e.g. fetch,flash."})
def bench(c: Context, only: str = "") -> None:
    """Run the benchmarks in bench/ and print their figures."""
    parts = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
    chosen = [p.strip() for p in only.split(",") if p.strip()] or parts
    unknown = [p for p in chosen if p not in parts]
    if unknown:
        raise Exit(f"error: bench: unknown part {unknown[0]!r} (hint: parts are {', '.join(parts)})", code=2)
    for part in chosen:
        print(f"== bench {part}", flush=True)
        c.run(shlex.join([sys.executable, str(ROOT / "bench" / f"{part}.py")]), pty=False)
