"""File helpers shared by every writer: nothing is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile


def make_readable(path):
    """The permissions a plain write would give (temporary files and dirs start private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside `path`; on success fsync and rename it over `path`.

    On any error the temporary file is removed and `path` is untouched. Yields the open
    file object; use `atomic_path` instead when a library wants a file name.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary file name beside `path`, renamed to `path` if the block succeeds.

    `suffix` keeps an extension that a library checks (Keras wants `.weights.h5`).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".part-",
                               suffix=suffix, dir=directory)
    os.close(fd)
    make_readable(tmp)  # mkstemp's 0600 would make every output private
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
