"""`invoke build`: the whole pipeline as one explicit, ordered list of stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.build.accounts import Accounts
from stages.build.base_image import BaseImage
from stages.build.cloud_init import CloudInit
from stages.build.edit_close import EditClose
from stages.build.edit_open import EditOpen
from stages.build.expansion import Expansion
from stages.build.fetch import Fetch
from stages.build.finalize import Finalize
from stages.build.firstboot_unit import FirstbootUnit
from stages.build.hwrng import Hwrng
from stages.build.open_image import OpenImage
from stages.build.overlays import Overlays
from stages.build.packages import Packages
from stages.build.secrets import Secrets
from stages.build.shrink import Shrink
from stages.build.work_copy import WorkCopy
from stages.core.config import Config
from stages.core.files import remove_tree
from stages.core.runner import Context, Stage, run_stages


def source_stage(config: Config) -> Stage:
    """Where the base comes from: built from Debian, or fetched (release, url, path).

    ``base.path`` goes through Fetch as in ``invoke fetch``: a raw image is used in place, a
    compressed one is unpacked into the cache; the work copy never modifies either.
    """
    if config.base.source == "debian":
        return BaseImage()
    return Fetch()


def build_stages(config: Config) -> list[Stage]:
    return [
        source_stage(config),  # verified base image (cached, never modified)
        WorkCopy(),            # sparse copy in out/ under a temporary name; grow the partition
        OpenImage(),           # check the layout, detect arch/release/kernels, mount root for the chroot
        Packages(),            # rng-tools and packages.install through a qemu-user chroot
        EditOpen(),            # one libguestfs handle for all file edits
        Hwrng(),               # dtparam=random=on, the kernel module, TPM, rngd settings
        Secrets(),             # strip host keys, seed, machine-id; turn off other key makers
        Accounts(),            # user, password hash, keys, root locked, sshd settings
        CloudInit(),           # cloud-init (trixie) left working; the recipe's accounts kept
        FirstbootUnit(),       # entropi's first-boot unit and its settings
        Overlays(),            # overlays/boot, overlays/rootfs, overlays.extra
        Expansion(),           # the image's own first-boot growth to the card, or entropi-growroot
        EditClose(),
        Shrink(),              # image.shrink: root file system, partition and file cut to the data
        Finalize(),            # .img, .bmap, compressed copy, .sha256 (manifest by the runner)
    ]


def build(config: Config, out_dir: Path) -> dict[str, Any]:
    """Run the pipeline; returns the manifest (also written to out/NAME.manifest.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".work-{config.name}"
    remove_tree(work)
    work.mkdir()
    ctx = Context(config=config, out_dir=out_dir, work_dir=work)
    ctx.temp(work)
    return run_stages(build_stages(config), ctx, manifest_path=out_dir / f"{config.name}.manifest.json")
