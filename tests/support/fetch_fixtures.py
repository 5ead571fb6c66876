"""Small fetch fixtures (a 3 MiB 'image' and its archives) and helpers shared by the fetch tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

IMAGE_BYTES = 3 << 20


def sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def make_fixtures(d: Path) -> dict[str, Path]:
    """base.img (random head, patterned body, a zero hole) and every archive form of it."""
    d.mkdir(parents=True, exist_ok=True)
    head = os.urandom(256 << 10)
    body = (b"entropi-" * ((IMAGE_BYTES - len(head)) // 8 + 1))[: IMAGE_BYTES - len(head) - (512 << 10)]
    img = d / "base.img"
    img.write_bytes(head + bytes(512 << 10) + body)
    out = {"img": img}
    for kind, argv in {"xz": ["xz", "-k", "-f"], "gz": ["gzip", "-k", "-f"], "bz2": ["bzip2", "-k", "-f"],
                       "zst": ["zstd", "-q", "-f"]}.items():
        subprocess.run([*argv, str(img)], check=True)
        out[kind] = d / f"base.img.{kind}"
    with zipfile.ZipFile(d / "base.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(img, "base.img")
        z.writestr("README.txt", "hello\n")
    out["zip"] = d / "base.zip"
    with zipfile.ZipFile(d / "none.zip", "w") as z:
        z.writestr("README.txt", "no image here\n")
    out["zip-none"] = d / "none.zip"
    with zipfile.ZipFile(d / "two.zip", "w") as z:
        z.write(img, "a.img")
        z.write(img, "b.img")
    out["zip-two"] = d / "two.zip"
    data = out["xz"].read_bytes()
    (d / "truncated.img.xz").write_bytes(data[: len(data) * 2 // 3])
    out["xz-truncated"] = d / "truncated.img.xz"
    return out


def write_recipe(d: Path, **base: str) -> Path:
    recipe = d / "recipe.toml"
    recipe.write_text("[base]\n" + "".join(f'{k} = "{v}"\n' for k, v in base.items()))
    return recipe


def invoke_fetch(recipe: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENTROPI_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "fetch", "--recipe", str(recipe), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def cached_files(cache: Path) -> list[Path]:
    """What the cache trusts: everything under downloads/ except rejected/ and locks."""
    root = cache / "downloads"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and "rejected" not in p.parts and p.name != ".lock")
