"""Downloads and the cache against a real HTTP server on 127.0.0.1 (never the internet):
huggingface_hub against a Hub lookalike, the release-URL fallback, the converted-file cache,
and the cache under stress (two processes at once, a download killed midway, a full disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from senet.catalogue import Pretrained
from senet.errors import DownloadError, HashMismatchError
from senet.weights import hub

REPO = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Files in a cache directory other than lock files (temporary files start with a dot)."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def hub_entry(server, data, **kw):
    server.hub[("org/weights", "model.safetensors")] = data
    return Pretrained("seresnet50", "test", hub="org/weights", sha256=sha(data), **kw)


def url_entry(server, name, data, prefix=8, **kw):
    (server.root / name).write_bytes(data)
    return Pretrained("se_resnet18", "test", url=f"{server.url}/{name}",
                      url_sha256=sha(data)[:prefix], layout="timm_legacy", **kw)


# --------------------------------------------------------------------------- the Hub


def test_hub_download_is_verified_and_cached(hub_server, home):
    data = os.urandom(300_000)
    entry = hub_entry(hub_server, data)
    assert hub.fetch(entry).read_bytes() == data
    assert hub_server.full["org/weights/model.safetensors"] == 1
    hub_server.stop()  # a second fetch needs no server (huggingface_hub's cache)
    assert hub.fetch(entry).read_bytes() == data


def test_hub_offline_mode_without_cache_is_one_line(hub_server, home, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    entry = hub_entry(hub_server, b"x" * 1000)
    with pytest.raises(DownloadError) as err:
        hub.fetch(entry)
    text = str(err.value)
    assert "offline mode is on" in text and "org/weights" in text and "\n" not in text
    assert "senet convert model.safetensors --model seresnet50.test" in text
    assert hub_server.requests == {}  # offline means no request at all


def test_hub_file_missing_from_repo(hub_server, home):
    entry = dataclasses.replace(hub_entry(hub_server, b"x"), file="other.safetensors")
    with pytest.raises(DownloadError, match="the Hub repository has no such file"):
        hub.fetch(entry)


# --------------------------------------------------------------------------- release URLs


def test_url_download_is_verified_and_cached(server, home):
    data = os.urandom(300_000)
    entry = url_entry(server, "w-abc.pth", data)
    path = hub.fetch(entry, progress=False)
    assert path == home / "downloads" / "w-abc.pth" and path.read_bytes() == data
    server.stop()
    assert hub.fetch(entry, progress=False) == path


def test_url_with_the_wrong_hash_caches_nothing(server, home):
    entry = dataclasses.replace(url_entry(server, "w.pth", os.urandom(1000)), url_sha256="00000000")
    with pytest.raises(HashMismatchError, match="expected 00000000"):
        hub.fetch(entry, progress=False)
    assert leftovers(home / "downloads") == []


@pytest.mark.parametrize("how,message", [("truncate", "closed"), ("slow", "timed out")])
def test_url_transfer_failures_cache_nothing(server, home, monkeypatch, how, message):
    monkeypatch.setattr(hub, "TIMEOUT", 0.5)
    entry = url_entry(server, "w.pth", os.urandom(3_000_000))
    server.behaviour["w.pth"] = how
    with pytest.raises(DownloadError, match=message):
        hub.fetch(entry, progress=False)
    assert leftovers(home / "downloads") == []


def test_url_without_content_length_and_404(server, home):
    data = os.urandom(100_000)
    entry = url_entry(server, "n.pth", data)
    server.behaviour["n.pth"] = "no-length"
    assert hub.fetch(entry, progress=False).read_bytes() == data
    missing = dataclasses.replace(entry, url=f"{server.url}/gone.pth")
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.fetch(missing, progress=False)


def test_hub_copy_missing_falls_back_to_the_url(hub_server, home):
    data = os.urandom(50_000)
    entry = dataclasses.replace(url_entry(hub_server, "legacy-x.pth", data),
                                hub="timm/legacy_x.in1k")
    hub_server.hub[("org/other", "model.safetensors")] = b"-"  # the Hub answers, without it
    assert hub.fetch(entry, progress=False).read_bytes() == data
    assert hub_server.requests[("HEAD", "timm/legacy_x.in1k/resolve/main/model.safetensors")] == 1


def test_nothing_reachable_names_both_sources(home, no_retry_wait):
    entry = Pretrained("se_resnet18", "test", hub="timm/legacy_x.in1k",
                       url="http://127.0.0.1:9/w-00.pth", url_sha256="00")
    with pytest.raises(DownloadError) as err:
        hub.fetch(entry, progress=False)
    text = str(err.value)
    assert "timm/legacy_x.in1k" in text and "127.0.0.1:9/w-00.pth" in text and "offline" in text


def test_cache_dir_defaults_to_keras_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SENET_HOME", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert hub.cache_dir() == tmp_path / "kh" / "senet"
    assert hub.cache_dir().is_dir()
    monkeypatch.setenv("SENET_HOME", str(tmp_path / "sh"))
    assert hub.cache_dir() == tmp_path / "sh"


def test_cached_path_rejects_escapes(home):
    for key in ["../x", "/etc/passwd", "", "a/../../b"]:
        with pytest.raises(ValueError):
            hub.cached_path(key)


# --------------------------------------------------------------------------- ensure_cached


def test_ensure_cached_builds_once(home):
    target = hub.cached_path("converted/se_resnet50.weights.h5")
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
    assert leftovers(target.parent) == [target.name]


def test_ensure_cached_rebuilds_an_invalid_file_and_leaves_nothing_on_failure(home):
    target = hub.cached_path("converted/x.weights.h5")
    target.write_bytes(b"damaged")
    assert hub.ensure_cached(target, lambda t: t.write_bytes(b"good"),
                             lambda p: p.read_bytes() == b"good") == target
    target.write_bytes(b"damaged")

    def build(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        hub.ensure_cached(target, build, lambda p: p.read_bytes() == b"good")
    assert leftovers(target.parent) == []
    with pytest.raises(RuntimeError, match="does not pass"):
        hub.ensure_cached(target, lambda tmp: tmp.write_bytes(b"bad"),
                          lambda p: p.read_bytes() == b"good")
    assert leftovers(target.parent) == []


# --------------------------------------------------------------------------- under stress

# A child that loads catalogue weights the way a user does, with one catalogue entry pointed
# at the test's generated file (the only thing a real run would not have).
_CHILD = textwrap.dedent("""
    import dataclasses, json, resource, signal, sys
    sys.path.insert(0, sys.argv[1])
    key, sha256, limit = sys.argv[2], sys.argv[3], int(sys.argv[4])
    if limit:  # a disk that fills up: writes beyond `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from senet import catalogue
    catalogue.CATALOGUE[key] = dataclasses.replace(catalogue.CATALOGUE[key], sha256=sha256)
    print("ready", flush=True)
    sys.stdin.readline()
    from senet.cli import main
    sys.exit(main(["predict", sys.argv[5], "--weights", key, "--json", "--top", "1"]))
""")
KEY = "seresnext26t_32x4d.bt_in1k"


@pytest.fixture(scope="module")
def published_file(tmp_path_factory):
    pytest.importorskip("timm")
    from timm_reference import random_timm_model, save

    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    return save(random_timm_model("seresnext26t_32x4d", seed=12), path, "safetensors").read_bytes()


def _child(hub_server, home, data, limit=0):
    env = dict(os.environ, SENET_HOME=str(home), HF_HOME=str(home.parent / "hf"),
               HF_HUB_CACHE=str(home.parent / "hf" / "hub"), HF_ENDPOINT=hub_server.url,
               KERAS_BACKEND="tensorflow", HF_HUB_DISABLE_PROGRESS_BARS="1")
    image = str(REPO / "senet" / "data" / "chelsea.jpg")
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(REPO), KEY, sha(data), str(limit),
                          image], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    return p


def _next_run_recovers(data, monkeypatch):
    """The next `senet predict` after the failure, in this process: the fixtures point it at
    the same caches and server as the children, and it has never touched them (a fresh
    interpreter would cost about 6 CPU-seconds of imports and check nothing more)."""
    from cli_runner import run
    from senet import catalogue

    entry = catalogue.CATALOGUE[KEY]
    monkeypatch.setitem(catalogue.CATALOGUE, KEY, dataclasses.replace(entry, sha256=sha(data)))
    r = run("predict", REPO / "senet" / "data" / "chelsea.jpg", "--weights", KEY, "--json",
            "--top", "1")
    assert r.returncode == 0, r.stderr
    assert len(_predictions(r.stdout)) == 1


def _go(*procs):
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def _serve(hub_server, data, how=None):
    hub_server.hub[(f"timm/{KEY}", "model.safetensors")] = data
    if how:
        hub_server.behaviour[f"timm/{KEY}/model.safetensors"] = how


def _predictions(out):
    return [json.loads(l)["predictions"][0] for l in out.splitlines() if l.startswith("{")]


@pytest.mark.slow
def test_two_processes_fill_the_cache_once(hub_server, home, published_file):
    _serve(hub_server, published_file, "throttle")
    procs = [_child(hub_server, home, published_file) for _ in range(2)]
    _go(*procs)
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert _predictions(results[0][0]) == _predictions(results[1][0]) != []
    assert hub_server.full[f"timm/{KEY}/model.safetensors"] == 1  # downloaded once
    assert leftovers(home / "converted") == [f"{KEY}-{sha(published_file)[:12]}.weights.h5"]


@pytest.mark.slow
def test_a_download_killed_midway_recovers_on_the_next_run(hub_server, home, published_file,
                                                           monkeypatch):
    _serve(hub_server, published_file, "throttle")
    p = _child(hub_server, home, published_file)
    _go(p)
    blobs = home.parent / "hf" / "hub"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(blobs.rglob("*.incomplete")):
        time.sleep(0.05)
    assert any(blobs.rglob("*.incomplete")), "the download never started"
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert leftovers(home / "converted") == []  # nothing half-written counts as converted
    hub_server.behaviour.clear()
    _next_run_recovers(published_file, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["download", "conversion"])
def test_a_full_disk_fails_in_one_line_and_the_next_run_recovers(hub_server, home,
                                                                  published_file, stage,
                                                                  monkeypatch):
    """The disk fills up while the file is downloaded, or while its conversion is written."""
    _serve(hub_server, published_file)
    limit = len(published_file) // 2 if stage == "download" else len(published_file) + 4096
    p = _child(hub_server, home, published_file, limit=limit)
    _go(p)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    lines = [l for l in err.splitlines() if l.strip() and "it/s" not in l]
    assert lines and lines[-1].startswith("senet predict: error:") and "Traceback" not in err
    assert "too large" in lines[-1].lower(), lines[-1]  # EFBIG: the file size limit
    assert leftovers(home / "converted") == []
    _next_run_recovers(published_file, monkeypatch)
