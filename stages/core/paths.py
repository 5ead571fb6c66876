"""The repository's own directories, found once from this file's place in the package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # stages/core/paths.py -> the repository
FIRSTBOOT = ROOT / "firstboot"  # the first-boot element installed into images
OVERLAYS = ROOT / "overlays"  # files copied into images as they are
RECIPES = ROOT / "recipes"
PI_TRIXIE = ROOT / "stages" / "source" / "pi_trixie"  # files of the offline trixie base (Raspberry Pi OS-shaped)
