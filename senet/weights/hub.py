"""Fetch the published weight files once, verify them, and keep them in a local cache.

Every download is checked against a sha256 prefix before it lands in the cache, so a
file in the cache is always a complete, verified copy. Writes go to a temporary file
beside the target and are renamed into place, under a per-file lock, so concurrent
processes neither corrupt the cache nor download the same file twice.

Environment:
  SENET_HOME             cache directory (default: $KERAS_HOME/senet, KERAS_HOME
                         defaulting to ~/.keras as in Keras).
  SENET_WEIGHTS_MIRROR   fetch `<mirror>/<file name>` instead of the published URL; an
                         http(s) URL, a file:// URL or a local directory (air-gapped use).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from senet._io import atomic_path
from senet._progress import Progress

__all__ = [
    "DownloadError",
    "HashMismatchError",
    "cache_dir",
    "cached_path",
    "ensure_cached",
    "fetch",
    "sha256_file",
]

# Seconds to wait for the connection and for each read; module-level so it can be tuned.
TIMEOUT = 30.0
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A weight file could not be fetched; the message says what to do by hand."""


class HashMismatchError(DownloadError):
    """The fetched file is not the published one (wrong or corrupted content)."""


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
        raise OSError(f"Cannot create the senet cache directory {root}: {e.strerror or e}. "
                      "Set SENET_HOME to a writable directory.") from e
    return root


def cached_path(key: str) -> Path:
    """Path of a derived artifact `key` (a relative '/'-separated name) inside the cache.

    Parent directories are created; `key` may not escape the cache directory.
    """
    parts = [p for p in str(key).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(str(key)):
        raise ValueError(f"Invalid cache key {key!r}: use a relative name such as "
                         "'converted/se_resnet50.weights.h5' without '..'.")
    path = cache_dir().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- hashing


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in chunks so large weight files need little memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _hash_ok(path: Path, prefix: str) -> bool:
    try:
        return sha256_file(path).startswith(prefix)
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _file_lock(lock_path: Path, label: str, announce: bool):
    """Hold an exclusive lock on `lock_path` so only one process writes the artifact.

    The lock file is left in place: deleting it would race with a process that has
    already opened it and is waiting. POSIX uses flock; Windows uses msvcrt; elsewhere
    there is no lock (writes are still atomic, only duplicate work is possible).
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a+b")
    except OSError as e:
        raise OSError(e.errno, f"Cannot write to the senet cache ({lock_path}): "
                      f"{e.strerror or e}. Set SENET_HOME to a writable directory.") from e
    with f:
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if announce:
                    print(f"Waiting for another process to finish {label} ...",
                          file=sys.stderr, flush=True)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return
        try:
            import msvcrt
        except ImportError:
            yield
            return
        while True:
            try:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                time.sleep(0.1)
        try:
            yield
        finally:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


# --------------------------------------------------------------------------- fetching


def _file_name_from_url(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _source_for(url: str, file_name: str) -> tuple[str, bool]:
    """Where to read the file from: (url or local path, is_local)."""
    mirror = os.environ.get("SENET_WEIGHTS_MIRROR", "").strip()
    if not mirror:
        return url, False
    trimmed = mirror.rstrip("/\\") or mirror
    scheme = urllib.parse.urlsplit(trimmed).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        return f"{trimmed}/{urllib.parse.quote(file_name)}", False
    if scheme == "file":
        directory = urllib.request.url2pathname(urllib.parse.urlsplit(trimmed).path)
        return os.path.join(directory, file_name), True
    return os.path.join(os.path.expanduser(trimmed), file_name), True


def _manual_hint(url: str, file_name: str, model_name: str | None) -> str:
    model = model_name or "<model>"
    out = f"{model_name}.weights.h5" if model_name else "<out>.weights.h5"
    return (f"To proceed by hand: download {url} on a machine with internet, then run "
            f"`senet convert {file_name} --model {model} --output {out}` and pass "
            f"weights='{out}'; or put {file_name} in a directory and set "
            f"SENET_WEIGHTS_MIRROR to that directory.")


def _reason(exc: BaseException) -> str:
    """One human sentence fragment for why a transfer failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no data for {TIMEOUT:g} s (timed out)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no server is listening there; offline?)"
    if isinstance(exc, socket.gaierror):
        return f"the host name could not be resolved ({exc.strerror or exc}; offline?)"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the whole file was received"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.rstrip(".")
    return str(exc) or exc.__class__.__name__


def _open(source: str, is_local: bool):
    """Open the source for streaming: (binary stream, total size or None)."""
    if is_local:
        stream = open(source, "rb")
        return stream, os.fstat(stream.fileno()).st_size
    request = urllib.request.Request(source, headers={"User-Agent": "senet-weights/1"})
    response = urllib.request.urlopen(request, timeout=TIMEOUT)  # follows redirects
    length = response.headers.get("Content-Length")
    try:
        total = int(length) if length is not None else None
    except ValueError:
        total = None
    return response, total


def _download(source: str, is_local: bool, target: Path, prefix: str, progress,
              fail: Callable[[str], DownloadError]) -> None:
    """Stream `source` into a temp file beside `target`, verify, then rename it in place."""
    name = target.name
    try:
        stream, total = _open(source, is_local)
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise fail(_reason(e)) from e
    # progress=True: a live line on a terminal, else a line at the start and at the end;
    # "always": the live line anyway; False: silent.
    bar = Progress(total, unit="MB", scale=1e6, label=name, live=True if progress == "always"
                   else None) if progress else None
    if bar and not bar.live:
        size = f" ({total / 1e6:.1f} MB)" if total is not None else ""
        bar.note(f"Downloading {name} from {source}{size} ...")
    done = 0
    ok = False
    try:
        with stream, atomic_path(target) as tmp:
            h = hashlib.sha256()
            with open(tmp, "wb") as out:
                while True:
                    try:
                        chunk = stream.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise fail(f"{_reason(e)} after {done} bytes") from e
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise OSError(e.errno, f"Cannot write {target}: "
                                      f"{e.strerror or e}. Free some disk space or set "
                                      "SENET_HOME to another directory.") from e
                    h.update(chunk)
                    done += len(chunk)
                    if bar:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and done != total:
                raise fail(f"the connection closed after {done} of {total} bytes "
                           "(incomplete file)")
            actual = h.hexdigest()
            if not actual.startswith(prefix):
                raise HashMismatchError(
                    f"The file fetched from {source} is not the published {name}: its "
                    f"sha256 is {actual}, expected it to start with {prefix}. Nothing was "
                    f"cached. The server or mirror returned a different or corrupted file; "
                    f"try again, or check SENET_WEIGHTS_MIRROR.")
            ok = True
    finally:
        if bar:
            bar.close()
            if ok and not bar.live:
                bar.note(f"Downloaded {name}: {done / 1e6:.1f} MB in "
                         f"{time.monotonic() - bar.start:.1f} s.")


def fetch(url: str, sha256_prefix: str, *, file_name: str | None = None,
          progress: bool | str = True, model_name: str | None = None) -> Path:
    """Return the local path of the verified published file `url`, downloading it once.

    The file is kept in `cache_dir()/downloads/<file_name>`; a cached copy whose sha256
    starts with `sha256_prefix` is returned without network access, a damaged one is
    fetched again. `progress`: True = live bar on a terminal, a start/end line otherwise;
    "always" = live bar even without a terminal; False = silent. `model_name` only fills
    in the by-hand instructions of a DownloadError.
    """
    prefix = (sha256_prefix or "").strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise ValueError(f"sha256_prefix must be hexadecimal digits, got {sha256_prefix!r}.")
    name = file_name or _file_name_from_url(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"Cannot take a file name from {url!r}; pass file_name='...'.")

    target = cache_dir() / "downloads" / name
    if _hash_ok(target, prefix):  # fast path: no lock, works on a read-only cache too
        return target

    source, is_local = _source_for(url, name)

    def fail(reason: str) -> DownloadError:
        via = (f" (SENET_WEIGHTS_MIRROR is set; the published URL is {url})"
               if source != url else "")
        return DownloadError(
            f"Could not download {name} from {source}: {reason}{via}. Expected sha256 "
            f"prefix {prefix}. {_manual_hint(url, name, model_name)}")

    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(name + ".lock"), f"downloading {name}", bool(progress)):
        if _hash_ok(target, prefix):  # another process finished it while we waited
            return target
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # damaged or truncated cache entry
        _download(source, is_local, target, prefix, progress, fail)
    return target


# --------------------------------------------------------------------------- derived files


def _full_suffix(name: str) -> str:
    """'.weights.h5' for 'se_resnet50.weights.h5': Keras checks the whole suffix."""
    dot = name.find(".", 1)
    return name[dot:] if dot > 0 else ""


def _valid(validate: Callable[[Path], bool], path: Path) -> tuple[bool, BaseException | None]:
    try:
        return bool(validate(path)), None
    except Exception as e:  # an unreadable file is a damaged file
        return False, e


def ensure_cached(path: Path, build: Callable[[Path], None],
                  validate: Callable[[Path], bool]) -> Path:
    """Return `path`, building it once with `build(tmp_path)` if missing or invalid.

    Used for artifacts that are expensive to derive (converted `.weights.h5` files).
    Under a lock on `<path>.lock`: an existing file that passes `validate` is returned;
    a damaged one is removed; `build` writes to a temporary path beside `path` that has
    the same full suffix (it may already exist, empty), which is validated and renamed
    into place. If `build` raises or its output is invalid nothing is left behind.
    `validate` raising counts as "invalid".
    """
    path = Path(path)
    if path.exists() and _valid(validate, path)[0]:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock"), f"building {path.name}", False):
        if path.exists() and _valid(validate, path)[0]:
            return path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with atomic_path(path, suffix=_full_suffix(path.name)) as tmp:
            build(Path(tmp))
            ok, error = _valid(validate, Path(tmp))
            if not ok:
                raise RuntimeError(
                    f"Building {path} produced a file that does not pass validation"
                    + (f" ({error.__class__.__name__}: {error})" if error else "")
                    + "; nothing was cached. This is a bug in the build step; please report "
                    "it.") from error
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    return path
