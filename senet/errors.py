"""The project's errors: problems a user can fix, each with a message that names the file or
argument, says what is wrong and what to do.

The command line prints a `SenetError` as one line and exits with 1; any other exception is a
bug and keeps its traceback. Subclasses also derive from the built-in type that Python code
expects (`ValueError` for bad arguments and bad files, `OSError` for downloads), so callers
that catch those keep working.
"""

from __future__ import annotations


class SenetError(Exception):
    """Base class: a user-fixable problem, described in one line."""


class ArgumentError(SenetError, ValueError):
    """A bad argument value (model name, size, option combination)."""


class WeightsFileError(SenetError, ValueError):
    """A weights file that cannot be used: damaged, of another format or architecture."""


class ConversionError(WeightsFileError):
    """A source weights file that does not map onto the requested architecture."""


class ImageError(SenetError, ValueError):
    """An image file that cannot be used; the message starts with the file name."""


class DownloadError(SenetError, OSError):
    """Weights that could not be fetched; the message names the file and the offline route."""


class HashMismatchError(DownloadError):
    """A fetched file whose sha256 is not the catalogue's: a wrong or corrupted copy."""


class WriteError(SenetError, OSError):
    """An output that could not be written (a full disk, no permission); nothing is left half-written."""


class MissingDependencyError(SenetError, ImportError):
    """An optional package (an engine, an exporter) that is not installed: says what to install."""


class DataError(SenetError, ValueError):
    """A dataset folder or label file that cannot be used (training, evaluation)."""


class ExportError(SenetError, ValueError):
    """An export that cannot be done, or whose artifact does not reproduce the model."""


def one_line(text: str) -> str:
    """`text` with its line breaks folded, for messages that quote untrusted content."""
    return " ".join(str(text).split())
