"""Disk full while unpacking: one error line, exit 2, no half image in the cache (a 2 MiB tmpfs)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tools
from tests.support.fetch_fixtures import cached_files, error_lines, invoke_fetch, make_fixtures, sha, write_recipe
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.integration


def test_disk_full_while_unpacking_is_one_line_and_leaves_no_partial_image(tmp_path: Path) -> None:
    need_root()
    need_tools("xz", "gzip", "bzip2", "zstd")
    fx = make_fixtures(tmp_path / "fx")
    cache = tmp_path / "small"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "entropi-test", str(cache)], check=True)
    try:
        with HTTPTestServer() as srv:
            recipe = write_recipe(tmp_path, url=srv.add("base.img.xz", fx["xz"]), sha256=sha(fx["xz"]))
            res = invoke_fetch(recipe, cache)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
        errors = error_lines(res.stderr)
        assert len(errors) == 1, res.stderr
        assert re.search(r"base\.url: no space left in .*small/downloads/[0-9a-f]{64} while unpacking base\.img "
                         r"after \d+ bytes .*\(hint: free some space there, or point ENTROPI_CACHE", errors[0])
        # the verified download stays (a later run with more room only unpacks); no image, no temp file
        assert [p.name for p in cached_files(cache)] == ["base.img.xz", "base.img.xz.json"]
        assert not list(cache.rglob(".*tmp*"))
    finally:
        subprocess.run(["umount", str(cache)], check=False)
