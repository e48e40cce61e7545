"""The download cache against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from senet.weights import hub

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = "https://weights.example.invalid/releases"  # never contacted: tests use a mirror


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(server, name: str, data: bytes) -> str:
    (server.root / name).write_bytes(data)
    return f"{PUBLISHED}/{name}"


def leftovers(directory: Path) -> list[str]:
    """Files in the cache other than lock files (temp files start with a dot)."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------- fetch


def test_download_verifies_and_caches(server, home, monkeypatch):
    data = os.urandom(300_000)
    (server.root / "w.pth").write_bytes(data)
    path = hub.fetch(f"{server.url}/w.pth", sha(data)[:8], progress=False)
    assert path == home / "downloads" / "w.pth"
    assert path.read_bytes() == data
    assert hub.sha256_file(path) == sha(data)
    assert server.requests["w.pth"] == 1
    assert leftovers(path.parent) == ["w.pth"]


def test_second_fetch_is_a_cache_hit(server, home, monkeypatch):
    data = os.urandom(50_000)
    url = publish(server, "w.pth", data)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    first = hub.fetch(url, sha(data)[:10], progress=False)
    server.stop()  # any network access now fails
    assert hub.fetch(url, sha(data)[:10], progress=False) == first
    assert server.requests["w.pth"] == 1


def test_mirror_url_with_trailing_slashes_and_redirects(server, home, monkeypatch):
    data = b"redirected" * 1000
    url = publish(server, "w.pth", data)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url + "/redirect//")
    path = hub.fetch(url, sha(data)[:8], progress=False)
    assert path.read_bytes() == data
    assert server.requests["redirect/w.pth"] == 1 and server.requests["w.pth"] == 1


def test_file_name_overrides_the_url(server, home):
    data = b"x" * 100
    (server.root / "download").write_bytes(data)
    path = hub.fetch(f"{server.url}/download?id=3", sha(data)[:8], file_name="w.pth",
                     progress=False)
    assert path.name == "w.pth" and path.read_bytes() == data


def test_wrong_hash_raises_and_caches_nothing(server, home, monkeypatch):
    data = b"not the published file" * 100
    url = publish(server, "w.pth", data)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    with pytest.raises(hub.HashMismatchError) as info:
        hub.fetch(url, "deadbeef", progress=False)
    message = str(info.value)
    assert f"{server.url}/w.pth" in message and "deadbeef" in message and sha(data) in message
    assert isinstance(info.value, hub.DownloadError)
    assert leftovers(home / "downloads") == []


def test_damaged_cache_entry_is_downloaded_again(server, home, monkeypatch):
    data = os.urandom(100_000)
    url = publish(server, "w.pth", data)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    path = hub.fetch(url, sha(data)[:8], progress=False)
    path.write_bytes(data[:1000])  # truncated, as after a crash of some other tool
    assert hub.fetch(url, sha(data)[:8], progress=False).read_bytes() == data
    assert server.requests["w.pth"] == 2


def test_server_gone_gives_manual_instructions(server, home, monkeypatch):
    url = publish(server, "w.pth", b"data")
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    server.stop()
    with pytest.raises(hub.DownloadError) as info:
        hub.fetch(url, "abcdef12", progress=False, model_name="se_resnet50")
    message = str(info.value)
    assert f"{server.url}/w.pth" in message  # what was tried
    assert url in message  # what to download by hand
    assert "abcdef12" in message and "refused" in message
    assert "senet convert w.pth --model se_resnet50 --output se_resnet50.weights.h5" in message
    assert "SENET_WEIGHTS_MIRROR" in message
    assert leftovers(home / "downloads") == []


def test_http_404(server, home):
    url = f"{server.url}/missing.pth"
    with pytest.raises(hub.DownloadError) as info:
        hub.fetch(url, "abcdef12", progress=False)
    assert url in str(info.value) and "404" in str(info.value)
    assert "senet convert missing.pth" in str(info.value)
    assert leftovers(home / "downloads") == []


def test_truncated_body_is_an_error_and_not_cached(server, home):
    data = os.urandom(200_000)
    (server.root / "w.pth").write_bytes(data)
    server.behaviour["w.pth"] = "truncate"
    with pytest.raises(hub.DownloadError) as info:
        hub.fetch(f"{server.url}/w.pth", sha(data)[:8], progress=False)
    assert f"{server.url}/w.pth" in str(info.value)
    assert f"of {len(data)} bytes" in str(info.value)
    assert not isinstance(info.value, hub.HashMismatchError)
    assert leftovers(home / "downloads") == []


def test_download_without_content_length(server, home, capsys):
    data = os.urandom(70_000)
    (server.root / "w.pth").write_bytes(data)
    server.behaviour["w.pth"] = "no-length"
    path = hub.fetch(f"{server.url}/w.pth", sha(data)[:8], progress="always")
    assert path.read_bytes() == data
    assert "MB/s" in capsys.readouterr().err


def test_timeout(server, home, monkeypatch):
    (server.root / "w.pth").write_bytes(b"late")
    server.behaviour["w.pth"] = "slow"
    monkeypatch.setattr(hub, "TIMEOUT", 0.3)
    with pytest.raises(hub.DownloadError, match="timed out"):
        hub.fetch(f"{server.url}/w.pth", sha(b"late")[:8], progress=False)
    assert leftovers(home / "downloads") == []


@pytest.mark.parametrize("form", ["dir", "dir/", "file-url"])
def test_local_directory_mirror(tmp_path, home, monkeypatch, form):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = os.urandom(10_000)
    (mirror / "w.pth").write_bytes(data)
    value = {"dir": str(mirror), "dir/": str(mirror) + "/", "file-url": mirror.as_uri()}[form]
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", value)
    path = hub.fetch(f"{PUBLISHED}/w.pth", sha(data)[:8], progress=False)
    assert path.read_bytes() == data and path.parent == home / "downloads"


def test_local_mirror_missing_file(tmp_path, home, monkeypatch):
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", str(tmp_path))
    with pytest.raises(hub.DownloadError) as info:
        hub.fetch(f"{PUBLISHED}/w.pth", "abcdef12", progress=False)
    assert str(tmp_path / "w.pth") in str(info.value) and "no such file" in str(info.value)


def test_progress_modes(server, home, capsys):
    data = os.urandom(10_000)
    (server.root / "a.pth").write_bytes(data)
    (server.root / "b.pth").write_bytes(data)
    hub.fetch(f"{server.url}/a.pth", sha(data)[:8], progress=False)
    assert capsys.readouterr().err == ""
    hub.fetch(f"{server.url}/b.pth", sha(data)[:8])  # stderr is not a terminal here
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "\r" not in err and "b.pth" in err


def test_bad_arguments(home):
    with pytest.raises(ValueError, match="sha256_prefix"):
        hub.fetch(f"{PUBLISHED}/w.pth", "not-hex")
    with pytest.raises(ValueError, match="file_name"):
        hub.fetch(f"{PUBLISHED}/", "abcdef12")


def test_cache_dir_defaults_to_keras_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SENET_HOME", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert hub.cache_dir() == tmp_path / "kh" / "senet"
    assert hub.cache_dir().is_dir()
    monkeypatch.setenv("SENET_HOME", str(tmp_path / "sh"))
    assert hub.cache_dir() == tmp_path / "sh"


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from senet.weights import hub  # light: senet imports Keras only when a model is built
    print("ready", flush=True)
    sys.stdin.readline()  # start both fetches together
    print(hub.fetch(sys.argv[2], sys.argv[3]), flush=True)
""")


def test_two_processes_download_once(server, home, tmp_path):
    data = os.urandom(20 * 1024 * 1024)
    url = publish(server, "big.pth", data)
    server.behaviour["big.pth"] = "throttle"
    env = dict(os.environ, SENET_HOME=str(home), SENET_WEIGHTS_MIRROR=server.url)
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(REPO), url,
                               sha(data)[:12]],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert out.strip() == str(home / "downloads" / "big.pth")
    assert (home / "downloads" / "big.pth").read_bytes() == data
    assert server.requests["big.pth"] == 1 and server.full["big.pth"] == 1
    assert sum(err.count("Downloaded big.pth") for _, err in results) == 1
    assert leftovers(home / "downloads") == ["big.pth"]


# --------------------------------------------------------------------------- ensure_cached


def test_ensure_cached_builds_once(home):
    target = hub.cached_path("converted/se_resnet50.weights.h5")
    assert target == home / "converted" / "se_resnet50.weights.h5"
    built = []

    def build(tmp):
        assert tmp.name.endswith(".weights.h5") and tmp.parent == target.parent
        built.append(tmp)
        tmp.write_bytes(b"good")

    def validate(path):
        return path.read_bytes() == b"good"

    assert hub.ensure_cached(target, build, validate) == target
    assert hub.ensure_cached(target, build, validate) == target
    assert len(built) == 1 and target.read_bytes() == b"good"
    assert not built[0].exists()
    assert leftovers(target.parent) == [target.name]


def test_ensure_cached_rebuilds_invalid_file(home):
    target = hub.cached_path("converted/x.weights.h5")
    target.write_bytes(b"damaged")
    calls = []

    def build(tmp):
        calls.append(tmp)
        tmp.write_bytes(b"good")

    assert hub.ensure_cached(target, build, lambda p: p.read_bytes() == b"good") == target
    assert len(calls) == 1 and target.read_bytes() == b"good"
    assert leftovers(target.parent) == [target.name]


def test_ensure_cached_leaves_nothing_when_build_fails(home):
    target = hub.cached_path("converted/x.weights.h5")
    target.write_bytes(b"damaged")

    def build(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        hub.ensure_cached(target, build, lambda p: p.read_bytes() == b"good")
    assert leftovers(target.parent) == []

    with pytest.raises(RuntimeError, match="does not pass validation"):
        hub.ensure_cached(target, lambda tmp: tmp.write_bytes(b"bad"),
                          lambda p: p.read_bytes() == b"good")
    assert leftovers(target.parent) == []


def test_cached_path_rejects_escapes(home):
    for key in ["../x", "/etc/passwd", "", "a/../../b"]:
        with pytest.raises(ValueError):
            hub.cached_path(key)
