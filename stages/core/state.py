"""What the build stages hand each other: one typed record instead of a string-keyed dict.

A field is None (or empty) until the stage that provides it has run. Each stage declares
the fields it ``reads`` and ``provides`` (stages/core/runner.py ``Stage``); a fast test walks
every recipe's stage list and proves each field is provided before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from stages.image.disk import Mbr
    from stages.image.guest import Launch
    from stages.image.handle import GuestHandle

T = TypeVar("T")


@dataclass
class BuildState:
    """The build's intermediate results and open resources, in pipeline order."""

    # the source stage (base image, local base, fetch): the verified, cached base image
    base_image: Path | None = None
    # work copy: the image being built (temporary name in out/), and whether it was grown
    image: Path | None = None
    grown: bool = False
    # open: what the image is, and the host-side root mount for the package chroot
    mbr: Mbr | None = None
    arch: str | None = None
    boot_mount: str | None = None
    kernels: list[str] | None = None
    release: dict[str, str] | None = None
    root: Path | None = None
    loop: str | None = None
    guest_launch: Launch | None = None
    # open libguestfs .. close libguestfs: the one handle for all file edits
    g: GuestHandle | None = None
    # first-boot expansion: the mechanism that grows the root at first boot (None: none)
    expansion: str | None = None
    # finalise: the image under its final name
    final_image: Path | None = None
    # resources one stage opens and closes itself (packages, shrink)
    chroot_mounts: list[Path] = field(default_factory=list)
    policy: Path | None = None
    resolv: Path | None = None
    shrink_loop: str | None = None


FIELDS = frozenset(f.name for f in fields(BuildState))


def need(value: T | None, name: str) -> T:
    """``value``, which an earlier stage must have provided as state field ``name``."""
    if value is None:
        raise RuntimeError(f"build state: {name} is not set yet (the stage that provides it has not run)")
    return value
