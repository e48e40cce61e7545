"""Fetch published weight files, verify them, and keep the converted results in a local cache.

Hugging Face Hub files are fetched by `huggingface_hub` (its cache, locking, resume,
`HF_HUB_OFFLINE`, and `HF_ENDPOINT` for mirrors); every file is then checked against the full
sha256 in the catalogue (or, for an entry not pinned yet, the sha256 the Hub declares for it)
and removed from the Hub cache if it does not match. Files with no Hub copy (timm's 2017
release files on GitHub) are streamed by `_download_url`, which huggingface_hub does not do
for arbitrary URLs: temporary file, sha256 prefix check, rename, under a per-file lock.

What the project caches itself is the converted file (`converted/`, the project's own
format, checksum-verified on every load), so a second `weights="imagenet"` neither
downloads nor converts.

Environment: SENET_HOME (cache directory; default $KERAS_HOME/senet, KERAS_HOME defaulting to
~/.keras), HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT (huggingface_hub's own).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from senet._io import atomic_path
from senet._progress import Progress
from senet.errors import DownloadError, HashMismatchError, WeightsFileError

TIMEOUT = 30.0  # seconds to wait for a URL's connection and for each read
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The root of senet's cache, created on demand, so every artifact lives in one place."""
    home = os.environ.get("SENET_HOME")
    if home:
        root = Path(home).expanduser()
    else:
        keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
        root = Path(keras_home).expanduser() / "senet"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot create the senet cache directory {root}: "
                            f"{e.strerror or e}. Set SENET_HOME to a writable directory.") from None
    return root


def cached_path(key: str) -> Path:
    """Path of a derived artifact `key` (a relative '/'-separated name) inside the cache."""
    parts = [p for p in str(key).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(str(key)):
        raise ValueError(f"Invalid cache key {key!r}: use a relative name without '..'.")
    path = cache_dir().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in chunks so large weight files need little memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def file_lock(lock_path: Path, label: str = "", announce: bool = False):
    """Hold an exclusive lock on `lock_path` so that only one process writes an artifact.

    The lock file is left in place: deleting it would race with a process waiting on it.
    POSIX flock; elsewhere no lock (writes stay atomic, only duplicate work is possible).
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a+b")
    except OSError as e:
        raise DownloadError(f"Cannot write to the senet cache ({lock_path}): {e.strerror or e}. "
                            "Set SENET_HOME to a writable directory.") from None
    with f:
        try:
            import fcntl
        except ImportError:
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                print(f"Waiting for another process to finish {label} ...", file=sys.stderr,
                      flush=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the Hub


def hub_url(entry) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{entry.hub}/resolve/main/{entry.file}"


def offline_route(entry) -> str:
    """What to do by hand: fetch the file elsewhere, convert it, pass the converted file."""
    where = (f"https://huggingface.co/{entry.hub}/resolve/main/{entry.file}" if entry.hub
             else entry.url)
    out = f"{entry.key}.weights.h5"
    return (f"To work offline, download {where} elsewhere, run `senet convert "
            f"{os.path.basename(where)} --model {entry.key} --output {out}` and pass "
            f"weights={out}")


def _reason(exc: BaseException) -> str:
    """One short phrase for why a transfer failed."""
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    if isinstance(exc, OfflineModeIsEnabled) or (
            isinstance(exc, LocalEntryNotFoundError) and _offline()):
        return "offline mode is on (HF_HUB_OFFLINE) and the file is not in the Hub cache"
    if isinstance(exc, LocalEntryNotFoundError) or (
            _network_error(exc) and not isinstance(exc, (OSError, urllib.error.URLError))):
        return "the Hub could not be reached (offline?) and the file is not in the Hub cache"
    if isinstance(exc, RepositoryNotFoundError):
        return "the Hub has no such repository"
    if isinstance(exc, EntryNotFoundError):
        return "the Hub repository has no such file"
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no data for {TIMEOUT:g} s (timed out)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (offline?)"
    if isinstance(exc, socket.gaierror):
        return "the host name could not be resolved (offline?)"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the whole file was received"
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _network_error(err) -> bool:
    """An error of the transport (whichever HTTP library huggingface_hub uses), not a bug."""
    root = type(err).__module__.split(".")[0]
    return isinstance(err, OSError) or root in ("httpx", "httpx2", "httpcore", "requests",
                                                  "urllib3")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@contextlib.contextmanager
def _quiet_hub():
    """huggingface_hub logs each retry as a warning; the user gets our one line instead."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fetch_hub(entry) -> Path:
    """The verified Hub file of `entry` (from huggingface_hub's cache or downloaded into it).

    A cached copy needs no network. Otherwise one quick look-up first: huggingface_hub
    retries an unreachable Hub for about 23 s before it gives up, which is a long wait for
    "you are offline".
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(entry.hub, entry.file)
    with _quiet_hub():
        if not isinstance(cached, str):
            if not _offline():
                get_hf_file_metadata(hub_url(entry))  # raises at once when unreachable
            cached = hf_hub_download(entry.hub, entry.file)
    path = Path(cached)
    blob = path.resolve()
    want = entry.sha256 or blob.name  # an LFS blob is named by its sha256 (the Hub's ETag)
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        want = None  # the Hub declared no sha256: the size check of huggingface_hub only
    got = sha256_file(blob)
    if want is not None and got != want:
        for p in (path, blob):  # nothing of it stays cached
            with contextlib.suppress(OSError):
                p.unlink()
        which = "the catalogue's" if entry.sha256 else "the one the Hub declares for it"
        raise HashMismatchError(
            f"{hub_url(entry)} is not the published {entry.file} of {entry.key}: its sha256 is "
            f"{got}, {which} is {want}. Nothing was cached; if HF_ENDPOINT points to a mirror, "
            "it serves a different file.")
    return path


def fetch(entry, progress=True) -> Path:
    """The local path of `entry`'s published file, verified, downloading it once.

    The Hub copy first; the original release URL when the Hub has no copy (or cannot be
    reached and we are not offline). DownloadError says in one line why, and the offline route.
    """
    if not entry.downloadable:
        raise DownloadError(f"No downloadable copy of {entry.key} is published: download the "
                            f"official {entry.file} by hand, run `senet convert {entry.file} "
                            f"--model {entry.key} --output {entry.key}.weights.h5` and pass "
                            f"weights={entry.key}.weights.h5")
    errors = []
    if entry.hub:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return _fetch_hub(entry)
        except HashMismatchError:
            raise
        except Exception as err:  # noqa: BLE001 - sorted by _network_error below
            if not isinstance(err, (HfHubHTTPError, LocalEntryNotFoundError)) \
                    and not _network_error(err):
                raise
            errors.append(f"{hub_url(entry)}: {_reason(err)}")
            if _offline() or not entry.url:
                raise DownloadError(f"Cannot download the weights {entry.key}: {errors[0]}. "
                                    f"{offline_route(entry)}") from None
    try:
        return _fetch_url(entry, progress)
    except HashMismatchError:
        raise
    except DownloadError as err:
        errors.append(str(err).rstrip("."))
    raise DownloadError(f"Cannot download the weights {entry.key}: {'; '.join(errors)}. "
                        f"{offline_route(entry)}")


# --------------------------------------------------------------------------- plain URLs


def _fetch_url(entry, progress) -> Path:
    name = urllib.parse.unquote(urllib.parse.urlsplit(entry.url).path.rsplit("/", 1)[-1])
    want = (entry.url_sha256 or "").lower()
    target = cache_dir() / "downloads" / name

    def ok():
        return target.is_file() and sha256_file(target).startswith(want)

    if ok():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.with_name(name + ".lock"), f"downloading {name}", bool(progress)):
        if ok():  # another process finished it while we waited
            return target
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        _download_url(entry.url, target, want, progress)
    return target


def _download_url(url: str, target: Path, want: str, progress) -> None:
    """Stream `url` into a temporary file beside `target`, verify, rename into place."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "senet-weights/2"})
        stream = urllib.request.urlopen(request, timeout=TIMEOUT)  # follows redirects
        total = int(stream.headers.get("Content-Length") or 0) or None
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {_reason(e)}") from None
    bar = Progress(total, unit="MB", scale=1e6, label=target.name) if progress else None
    if bar and not bar.live:
        bar.note(f"Downloading {url} ...")
    done = 0
    try:
        with stream, atomic_path(target) as tmp:
            h = hashlib.sha256()
            with open(tmp, "wb") as out:
                while True:
                    try:
                        chunk = stream.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise DownloadError(f"{url}: {_reason(e)} after {done} bytes") from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise DownloadError(f"Cannot write {target}: {e.strerror or e}. Free some "
                                            "disk space or set SENET_HOME elsewhere.") from None
                    h.update(chunk)
                    done += len(chunk)
                    if bar:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and done != total:
                raise DownloadError(f"{url}: the connection closed after {done} of {total} bytes")
            got = h.hexdigest()
            if not got.startswith(want):
                raise HashMismatchError(
                    f"{url} is not the published {target.name}: its sha256 is {got}, expected "
                    f"{want if len(want) == 64 else want + '...'}. Nothing was cached.")
    finally:
        if bar:
            bar.close()


# --------------------------------------------------------------------------- derived files


def ensure_cached(path: Path, build: Callable[[Path], None],
                  validate: Callable[[Path], bool]) -> Path:
    """Return `path`, building it once with `build(tmp_path)` if missing or invalid.

    Under a lock on `<path>.lock`: an existing file that passes `validate` is returned; a
    damaged one is removed; `build` writes a temporary file beside `path` (same suffix),
    which must pass `validate` before it is renamed into place. If `build` raises, nothing
    is left behind. `validate` raising counts as invalid.
    """
    path = Path(path)

    def valid(p):
        try:
            return bool(validate(p))
        except (WeightsFileError, OSError):
            return False

    if path.exists() and valid(path):
        return path
    with file_lock(path.with_name(path.name + ".lock"), f"building {path.name}"):
        if path.exists() and valid(path):
            return path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        suffix = path.name[path.name.find(".", 1):] if "." in path.name[1:] else ""
        with atomic_path(path, suffix=suffix) as tmp:
            build(Path(tmp))
            if not valid(Path(tmp)):
                raise RuntimeError(f"Building {path} produced a file that does not pass its own "
                                   "validation; nothing was cached. This is a bug, please report it.")
    return path
