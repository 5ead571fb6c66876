"""Fetch against a real HTTP server on 127.0.0.1: resume, retries, faults, cache, formats, catalogue, GPG."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.build.fetch import Fetch
from stages.build.pipeline import build_stages
from stages.core.errors import UserError
from stages.core.recipe import load_recipe
from stages.core.runner import Context
from stages.source.fetch import fetch, fetch_base
from tests.conftest import ROOT, need_tools
from tests.support.fetch_fixtures import cached_files, error_lines, invoke_fetch, make_fixtures, sha, write_recipe
from tests.support.httpserver import Fault, HTTPTestServer


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need_tools("xz", "gzip", "bzip2", "zstd")
    return make_fixtures(tmp_path_factory.mktemp("fetch-fixtures"))


@pytest.fixture
def srv() -> Iterator[HTTPTestServer]:
    with HTTPTestServer() as s:
        yield s


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("ENTROPI_CACHE", str(c))
    monkeypatch.setattr("stages.source.download.BACKOFF", 0.05)
    return c


def _url_recipe(tmp: Path, srv: HTTPTestServer, fx: dict[str, Path], kind: str = "xz",
                fault: Fault | None = None) -> Path:
    src = fx[kind]
    url = srv.add(src.name, src, fault)
    return write_recipe(tmp, url=url, sha256=sha(src))


def test_url_with_sha256_is_downloaded_unpacked_and_then_served_from_the_cache(
        tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path], cache: Path) -> None:
    config = load_recipe(_url_recipe(tmp_path, srv, fx))
    path = fetch_base(config)
    assert path.name == "base.img" and path.read_bytes() == fx["img"].read_bytes()
    assert path.is_relative_to(cache / "downloads" / sha(fx["xz"]))
    assert path.stat().st_blocks * 512 < path.stat().st_size  # the zero run became a hole
    n = len(srv.requests())
    assert fetch_base(config) == path and fetch_base(config, full_verify=True) == path
    assert len(srv.requests()) == n  # cache hits: no network


@pytest.mark.parametrize("kind", ["gz", "bz2", "zst", "zip", "img"])
def test_every_archive_form_unpacks_to_the_same_image(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                                      cache: Path, kind: str) -> None:
    path = fetch_base(load_recipe(_url_recipe(tmp_path, srv, fx, kind)))
    assert sha(path) == sha(fx["img"])
    assert path.suffix == ".img"


def test_resume_after_dropped_connection_keeps_bytes(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                                     cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(drop_after=100_000, drop_times=2))
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])
    assert [r.range for r in srv.requests()] == [None, "bytes=100000-", "bytes=200000-"]
    assert [r.status for r in srv.requests()] == [200, 206, 206]


def test_server_that_ignores_range_restarts_cleanly(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                                    cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(drop_after=100_000, ignore_range=True))
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])
    assert [(r.range, r.status) for r in srv.requests()] == [(None, 200), ("bytes=100000-", 200)]


def test_server_error_then_success_is_retried(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                              cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(fail_first=2))
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])
    assert [r.status for r in srv.requests()] == [500, 500, 200]


def test_server_that_keeps_failing_gives_up_after_bounded_tries(tmp_path: Path, srv: HTTPTestServer,
                                                                fx: dict[str, Path], cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(status=503))
    with pytest.raises(UserError, match=r"base\.url: download of .* failed after 6 tries: HTTP 503"):
        fetch_base(load_recipe(recipe))
    assert len(srv.requests()) == 6 and cached_files(cache) == []


def test_wrong_bytes_are_rejected_and_never_cached(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                                   cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(corrupt=True))
    with pytest.raises(UserError) as e:
        fetch_base(load_recipe(recipe))
    want = sha(fx["xz"])
    assert re.search(rf"SHA-256 mismatch for base\.img\.xz: expected {want}, got [0-9a-f]{{64}}", str(e.value))
    assert cached_files(cache) == []
    assert len(list((cache / "downloads" / "rejected").iterdir())) == 1


def test_resumed_download_with_bad_old_bytes_is_downloaded_once_more_from_zero(
        tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path], cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx)
    part = cache / "downloads" / sha(fx["xz"]) / "base.img.xz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # left by an earlier run, but not what the server has
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])
    assert [r.range for r in srv.requests()] == ["bytes=1000-", None]


def test_complete_part_file_is_finished_with_a_416(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                                   cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx)
    part = cache / "downloads" / sha(fx["xz"]) / "base.img.xz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(fx["xz"].read_bytes())
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])
    assert [r.status for r in srv.requests()] == [416]


def test_not_found_is_one_clear_error(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path], cache: Path) -> None:
    recipe = _url_recipe(tmp_path, srv, fx, fault=Fault(status=404))
    with pytest.raises(UserError, match=r"recipe\.toml: base\.url: http://127\.0\.0\.1:\d+/base\.img\.xz: not found"):
        fetch_base(load_recipe(recipe))
    assert len(srv.requests()) == 1


def test_sha256_url_beside_the_image_is_used(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                             cache: Path) -> None:
    url = srv.add("base.img.xz", fx["xz"])
    srv.add("base.img.xz.sha256", f"{'0' * 64}  other.img.xz\n{sha(fx['xz'])}  base.img.xz\n".encode())
    recipe = write_recipe(tmp_path, url=url, sha256_url=url + ".sha256")
    assert sha(fetch_base(load_recipe(recipe))) == sha(fx["img"])


def test_url_without_any_checksum_is_refused_before_downloading(tmp_path: Path, srv: HTTPTestServer,
                                                                fx: dict[str, Path], cache: Path) -> None:
    recipe = write_recipe(tmp_path, url=srv.add("base.img.xz", fx["xz"]))
    with pytest.raises(UserError, match=r"base\.url: a download needs a checksum \(hint: set base\.sha256"):
        Fetch().check(Context(load_recipe(recipe), tmp_path, tmp_path))
    assert srv.requests() == []


def _catalog(srv: HTTPTestServer, fx: dict[str, Path], extract_sha256: str) -> str:
    url = srv.add("images/base.img.xz", fx["xz"])
    doc = {"imager": {}, "os_list": [
        {"name": "Raspberry Pi OS (64-bit)", "url": srv.url("nope.img.xz"), "image_download_sha256": "1" * 64},
        {"name": "Raspberry Pi OS (other)", "subitems": [
            {"name": "Raspberry Pi OS Lite (64-bit)", "url": url, "release_date": "2026-10-01",
             "image_download_size": fx["xz"].stat().st_size, "image_download_sha256": sha(fx["xz"]),
             "extract_size": fx["img"].stat().st_size, "extract_sha256": extract_sha256}]}]}
    return srv.add("os_list.json", json.dumps(doc).encode())


def test_release_from_a_nested_catalogue_records_its_origin(tmp_path: Path, srv: HTTPTestServer,
                                                            fx: dict[str, Path], cache: Path) -> None:
    recipe = write_recipe(tmp_path, release="Raspberry Pi OS Lite (64-bit)", catalog=_catalog(srv, fx, sha(fx["img"])))
    ctx = Context(load_recipe(recipe), tmp_path, tmp_path)
    stage = Fetch()
    stage.check(ctx)
    stage.run(ctx)
    assert sha(ctx.state.base_image) == sha(fx["img"])
    assert ctx.manifest["base"]["release"] == "Raspberry Pi OS Lite (64-bit)"
    assert ctx.manifest["base"]["release_date"] == "2026-10-01"
    assert ctx.manifest["base"]["url"].endswith("/images/base.img.xz")
    assert ctx.manifest["inputs"] == [{"label": "base image", "path": str(ctx.state.base_image),
                                       "sha256": sha(fx["img"])}]


def test_catalogue_extract_sha256_mismatch_is_an_error_and_nothing_is_cached(
        tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path], cache: Path) -> None:
    recipe = write_recipe(tmp_path, release="Raspberry Pi OS Lite (64-bit)", catalog=_catalog(srv, fx, "2" * 64))
    with pytest.raises(UserError, match=r"SHA-256 mismatch for the unpacked base\.img: expected 2{64}, got"):
        fetch_base(load_recipe(recipe))
    assert [p.name for p in cached_files(cache)] == ["base.img.xz", "base.img.xz.json"]


def test_damaged_cache_entries_are_detected_and_fetched_again(tmp_path: Path, srv: HTTPTestServer,
                                                              fx: dict[str, Path], cache: Path) -> None:
    config = load_recipe(_url_recipe(tmp_path, srv, fx))
    path = fetch_base(config)
    with open(path, "r+b") as f:  # a truncated image: the cheap check (size) sees it
        f.truncate(1000)
    assert sha(fetch_base(config)) == sha(fx["img"])
    st = path.stat()
    with open(path, "r+b") as f:  # a flipped byte, same size and mtime: only --verify sees it
        f.seek(10)
        f.write(b"\xff" if f.read(1) != b"\xff" else b"\0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha(fetch_base(config)) != sha(fx["img"])
    assert sha(fetch_base(config, full_verify=True)) == sha(fx["img"])
    dl = path.with_name("base.img.xz")
    dl.write_bytes(b"garbage")  # a damaged download is fetched again, too
    path.unlink()
    n = len(srv.requests())
    assert sha(fetch_base(config)) == sha(fx["img"])
    assert len(srv.requests()) == n + 1


def test_local_path_compressed_is_unpacked_into_the_cache_raw_is_used_in_place(
        tmp_path: Path, fx: dict[str, Path], cache: Path) -> None:
    got = fetch(load_recipe(write_recipe(tmp_path, path=str(fx["zst"]), sha256=sha(fx["zst"]))))
    assert got.path.is_relative_to(cache) and got.sha256 == sha(fx["img"])
    assert fetch_base(load_recipe(write_recipe(tmp_path, path=str(fx["img"])))) == fx["img"]
    with pytest.raises(UserError, match=r"base\.sha256: SHA-256 mismatch for base\.img: expected 3{64}, got"):
        fetch_base(load_recipe(write_recipe(tmp_path, path=str(fx["img"]), sha256="3" * 64)))


@pytest.mark.parametrize("kind", ["xz", "gz"])
def test_compressed_base_path_is_accepted_alike_by_build_and_fetch(tmp_path: Path, cache: Path, kind: str) -> None:
    need_tools("xz" if kind == "xz" else "gzip")
    raw = b"entropi base\n" * 4096 + bytes(1 << 20) + b"tail"
    packed = tmp_path / f"base.img.{kind}"
    packed.write_bytes(lzma.compress(raw) if kind == "xz" else gzip.compress(raw))
    before = sha(packed)
    config = load_recipe(write_recipe(tmp_path, path=str(packed)))
    by_fetch = fetch_base(config)  # invoke fetch
    ctx = Context(config, tmp_path / "out", tmp_path / "work")
    stage = build_stages(config)[0]  # invoke build's first stage
    stage.check(ctx)
    stage.run(ctx)
    assert ctx.state.base_image == by_fetch and by_fetch.is_relative_to(cache / "downloads")
    assert by_fetch.name == "base.img" and by_fetch.read_bytes() == raw
    assert ctx.manifest["base"]["source"] == "path" and ctx.manifest["base"]["download_sha256"] == before
    assert sha(packed) == before


# --- GPG ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two throwaway keys (pinned and stranger) in a temporary GNUPGHOME; public keys exported."""
    need_tools("gpg", "gpgv")
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    out = {"home": home}
    for who in ("pinned", "stranger"):
        params = (f"%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n"
                  f"Name-Real: entropi {who}\nName-Email: {who}@example.invalid\nExpire-Date: 0\n%commit\n")
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--gen-key"], input=params.encode(),
                       check=True, capture_output=True)
        out[who] = home / f"{who}.asc"
        subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export", "-o", str(out[who]),
                        f"{who}@example.invalid"], check=True, capture_output=True)
    return out


def _sign(keys: dict[str, Path], who: str, data: Path, sig: Path) -> bytes:
    subprocess.run(["gpg", "--homedir", str(keys["home"]), "--batch", "--yes", "--local-user",
                    f"{who}@example.invalid", "--detach-sign", "-o", str(sig), str(data)],
                   check=True, capture_output=True)
    return sig.read_bytes()


@pytest.mark.parametrize("case", ["good", "tampered", "other-key"])
def test_detached_signature_is_checked_against_the_pinned_key(
        tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path], cache: Path, gpg_keys: dict[str, Path],
        case: str) -> None:
    sig = _sign(gpg_keys, "stranger" if case == "other-key" else "pinned", fx["xz"], tmp_path / "x.sig")
    if case == "tampered":
        other = tmp_path / "other"
        other.write_bytes(b"something else")
        sig = _sign(gpg_keys, "pinned", other, tmp_path / "other.sig")  # a valid signature, of another file
    url = srv.add("base.img.xz", fx["xz"])
    srv.add("base.img.xz.sig", sig)
    recipe = write_recipe(tmp_path, url=url, sha256=sha(fx["xz"]), signature_url=url + ".sig",
                          signing_key=str(gpg_keys["pinned"]))
    if case == "good":
        got = fetch(load_recipe(recipe))
        assert got.sha256 == sha(fx["img"]) and len(got.signer) == 40
        assert fetch(load_recipe(recipe), full_verify=True).signer == got.signer
        return
    why = "does not match the file" if case == "tampered" else "not made by the pinned key"
    with pytest.raises(UserError, match=rf"base\.signature_url: GPG signature check failed for base\.img\.xz: .*{why}"):
        fetch_base(load_recipe(recipe))
    assert cached_files(cache) == []


# --- through `invoke fetch`: one line on stdout, or one error line and exit 2 --------------------

def test_invoke_fetch_prints_the_image_path(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path]) -> None:
    res = invoke_fetch(_url_recipe(tmp_path, srv, fx), tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and sha(Path(lines[0])) == sha(fx["img"])


@pytest.mark.parametrize("case, message", [
    ("wrong-sha", r"base\.url: SHA-256 mismatch for base\.img\.xz: expected 4{64}, got [0-9a-f]{64} \(hint:"),
    ("xz-truncated", r"base\.url: truncated\.img\.xz is damaged: xz: (Unexpected end of input|.*)"),
    ("zip-none", r"base\.url: none\.zip must hold exactly one \.img, it holds 0 \(none\)"),
    ("zip-two", r"base\.url: two\.zip must hold exactly one \.img, it holds 2 \(a\.img, b\.img\)"),
    ("no-release", r"base\.release: no release named 'Raspberry Pi OS Full \(128-bit\)' in .*names there: "
                   r"'Raspberry Pi OS \(64-bit\)', 'Raspberry Pi OS Lite \(64-bit\)'"),
])
def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path, srv: HTTPTestServer, fx: dict[str, Path],
                                            case: str, message: str) -> None:
    cache = tmp_path / "cache"
    if case == "no-release":
        recipe = write_recipe(tmp_path, release="Raspberry Pi OS Full (128-bit)", catalog=_catalog(srv, fx, ""))
    else:
        src = fx["xz" if case == "wrong-sha" else case]
        want = "4" * 64 if case == "wrong-sha" else sha(src)
        recipe = write_recipe(tmp_path, url=srv.add(src.name, src), sha256=want)
    res = invoke_fetch(recipe, cache)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and re.search(message, errors[0]), res.stderr
    assert errors[0].startswith(f"error: {recipe}: ")
    assert not [p for p in cached_files(cache) if p.suffix == ".img" or p.name.startswith(".")]
    if case != "no-release":
        assert cached_files(cache) == []  # the bad download was moved to rejected/


def test_ctrl_c_keeps_the_part_file_and_the_next_run_resumes(tmp_path: Path, srv: HTTPTestServer,
                                                             fx: dict[str, Path]) -> None:
    cache = tmp_path / "cache"
    # The server sends half the file, then holds the connection until the test releases it:
    # Ctrl-C lands mid-download on any machine, however fast or loaded.
    half = fx["xz"].stat().st_size // 2
    fault = Fault(hold_at=half)
    recipe = _url_recipe(tmp_path, srv, fx, fault=fault)
    part = cache / "downloads" / sha(fx["xz"]) / "base.img.xz.part"
    env = dict(os.environ, ENTROPI_CACHE=str(cache))
    # SIGINT at its default in the child, as in a terminal: a run started in the background by a
    # shell without job control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "fetch", "--recipe", str(recipe)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert fault.held.wait(60), "the download never reached the middle of the file"
        # the client has received the first half; wait until it is in the .part (its write buffer is 8 KiB)
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= half - 8192) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        fault.release.set()
    assert proc.returncode == 130, err
    kept = part.stat().st_size
    assert 0 < kept < fx["xz"].stat().st_size
    srv.set_fault("base.img.xz", Fault())
    res = invoke_fetch(recipe, cache)
    assert res.returncode == 0, res.stderr
    assert sha(Path(res.stdout.strip())) == sha(fx["img"])
    resumed = srv.requests()[-1].range
    assert resumed is not None and int(resumed.split("=")[1].rstrip("-")) >= kept


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening) for the test's duration."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_default_recipe_offline_names_the_ways_that_need_no_download(cache: Path, closed_port: int) -> None:
    catalog = f"http://127.0.0.1:{closed_port}/os_list.json"
    config = load_recipe(ROOT / "pipeline.toml", [f"base.catalog={catalog}"])
    with pytest.raises(UserError) as info:
        fetch_base(config)
    line = info.value.render()
    assert line.startswith(f"error: {ROOT / 'pipeline.toml'}: base.catalog: could not fetch {catalog} after 6 tries")
    assert line.endswith("(hint: check the network and the address, then run again; or build with no Raspberry Pi "
                         "download: --recipe recipes/debian-arm64.toml (built from Debian's archive) or "
                         'base.path = "<local image>" in the recipe)')


def test_unreachable_download_names_the_offline_ways_too(tmp_path: Path, cache: Path, closed_port: int) -> None:
    recipe = write_recipe(tmp_path, url=f"http://127.0.0.1:{closed_port}/base.img.xz", sha256="4" * 64)
    with pytest.raises(UserError, match=r"base\.url: download of .* failed after 6 tries: .*"
                                        r"recipes/debian-arm64\.toml .*base\.path = \"<local image>\""):
        fetch_base(load_recipe(recipe))
