"""Images that are not Raspberry Pi images give one clear line, exit 2, and leave nothing in out/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_root, need_tools

pytestmark = pytest.mark.integration


def _image(tmp: Path, kind: str) -> Path:
    img = tmp / f"{kind}.img"
    if kind == "not-an-image":
        img.write_bytes(b"hello" * 100000)
        return img
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    if kind == "gpt":
        subprocess.run(["parted", "-s", str(img), "mklabel", "gpt", "mkpart", "p", "ext4", "1MiB", "60MiB"], check=True)
    elif kind == "one-partition":
        subprocess.run(["parted", "-s", str(img), "mklabel", "msdos", "mkpart", "primary", "ext4", "1MiB", "60MiB"],
                       check=True)
    elif kind == "no-config-txt":
        subprocess.run(["parted", "-s", str(img), "mklabel", "msdos", "mkpart", "primary", "fat32", "1MiB", "20MiB",
                        "mkpart", "primary", "ext4", "20MiB", "60MiB"], check=True)
        subprocess.run(["mformat", "-i", f"{img}@@1M", "-T", "38912", "::"], check=True)
    return img


@pytest.mark.parametrize("kind, message", [
    ("not-an-image", r"not a disk image \(no MBR boot signature\)"),
    ("gpt", r"GPT partition table; Raspberry Pi OS images use MBR"),
    ("one-partition", r"1 partition\(s\); expected a FAT boot and an ext4 root"),
    ("no-config-txt", r"the boot partition has no config\.txt"),
])
def test_wrong_image_shapes_are_refused_with_one_line(tmp_path: Path, kind: str, message: str) -> None:
    need_root()
    need_tools("parted", "mformat")
    img = _image(tmp_path, kind)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[base]\npath = "{img}"\n[output]\nname = "x"\ncompress = "none"\n')
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "invoke", "build", "--recipe", str(recipe), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), res.stderr
    assert [p.name for p in out.iterdir()] == [] if out.exists() else True
    assert str(tmp_path) not in Path("/proc/mounts").read_text()
