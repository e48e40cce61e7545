"""The project's own weights file (`.weights.h5`): arrays by Keras layer name, plus provenance.

An HDF5 file (one group per Keras layer, datasets "0", "1", ... in `layer.get_weights()`
order) behind an HDF5 user block, the space HDF5 reserves for applications at the start of a
file. The user block holds a JSON header: the metadata (model, tag, source, input convention,
classes and their order or names, preprocessing) and the sha256 of everything after the user
block. `read` checks that sha256 before the HDF5 library parses a byte, so a damaged or
crafted file is refused in Python rather than handed to a C parser that can crash or loop
forever on it. Header layout: b"SENETWTS", a little-endian uint32 length, the JSON, zeros.

Files without the header (Keras' `model.save_weights`, senet 0.1's files) are HDF5 of unknown
provenance: `probe` parses them completely in a child process under a time limit first, so
a file that would hang the HDF5 library stops there, not in the caller's process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np

from senet._io import atomic_path
from senet.errors import WeightsFileError, WriteError, one_line

FORMAT = "senet-weights"
VERSION = 2
MAGIC = b"SENETWTS"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_HEADER = 64 << 20  # a header larger than this is damage, not metadata
HEAD_LAYERS = ("classifier",)  # present in files, absent from include_top=False models
PROBE_SECONDS = 60.0  # plus one second per 50 MB: parsing a sound file takes far less


def _sha256_from(path, offset) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _header_bytes(meta: dict, body_sha256: str, userblock: int) -> bytes:
    doc = {"format": FORMAT, "version": VERSION, "userblock": userblock,
           "body_sha256": body_sha256, "meta": meta}
    text = json.dumps(doc, sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack("<I", len(text)) + text


def save(path, weights: dict, meta: dict) -> None:
    """Write `weights` ({layer: [arrays]}) and `meta` atomically to `path`.

    WriteError (a full disk, no permission) leaves nothing behind, and `path` as it was.
    """
    try:
        _save(path, weights, meta)
    except (OSError, RuntimeError) as err:  # h5py reports a failed write as either
        reason = getattr(err, "strerror", None) or one_line(err)
        raise WriteError(f"Cannot write {os.fspath(path)}: {reason}. Nothing was written; free "
                         "some disk space or choose another location.") from None


def _save(path, weights, meta):
    import h5py

    size = len(_header_bytes(meta, "0" * 64, 0)) + 16  # the userblock number grows a little
    userblock = 512
    while userblock < size:
        userblock *= 2
    with atomic_path(path, suffix=".weights.h5") as tmp:
        with h5py.File(tmp, "w", userblock_size=userblock) as f:
            for name, arrays in weights.items():
                g = f.create_group(name)
                for i, a in enumerate(arrays):
                    g.create_dataset(str(i), data=np.asarray(a, dtype=np.float32))
        header = _header_bytes(meta, _sha256_from(tmp, userblock), userblock)
        with open(tmp, "r+b") as f:
            f.write(header.ljust(userblock, b"\0"))
            f.flush()
            os.fsync(f.fileno())


# The type of each metadata field that senet reads back; a crafted header (its checksum says
# nothing about who wrote it) could otherwise hand a number where code expects a dict.
_NONE = type(None)
_META_TYPES = {"model": str, "tag": str, "input": str, "classes": int, "class_set": (str, _NONE),
               "class_order": str, "class_names": list, "preprocessing": dict, "source": dict,
               "layout": str, "top1": (int, float, _NONE), "license": (str, _NONE)}
_PREPROCESSING_TYPES = {"size": int, "crop_pct": (int, float), "interpolation": str}


def _check_meta(path, meta: dict) -> dict:
    for prefix, fields, types in (("", meta, _META_TYPES), ("preprocessing.", meta.get(
            "preprocessing") or {}, _PREPROCESSING_TYPES)):
        for key, want in types.items():
            value = fields.get(key)
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise _damaged(path, f"its metadata field '{prefix}{key}' is "
                                     f"{type(value).__name__} {one_line(repr(value))[:40]}")
    return meta


def _damaged(path, what) -> WeightsFileError:
    return WeightsFileError(f"{path}: the senet weights file is damaged ({what}); convert or "
                            "download it again.")


def read_header(path) -> dict | None:
    """The header of a senet weights file (cheap: the body is not read or checked).

    None for any file without the header (HDF5 from Keras or senet 0.1, or another format).
    Raises WeightsFileError for a file that has the header but a damaged one.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or not head.startswith(MAGIC):
                return None
            (length,) = struct.unpack("<I", head[8:])
            if length > min(size - 12, MAX_HEADER):
                raise _damaged(path, f"its header claims {length:,} bytes, the file has {size:,}")
            raw = f.read(length)
    except OSError as err:
        raise WeightsFileError(f"{path}: cannot read the file ({err.strerror or err}).") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: [[[[...
        raise _damaged(path, "its header is not valid JSON") from None
    ok = (isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("meta"), dict)
          and isinstance(doc.get("userblock"), int) and isinstance(doc.get("body_sha256"), str))
    version = doc.get("version", 0) if ok else None
    if not ok or not isinstance(version, int) or isinstance(version, bool):
        raise _damaged(path, "its header lacks the format, version, metadata or checksum")
    if version > VERSION:
        raise WeightsFileError(f"{path}: written by a newer senet (weights format version "
                               f"{doc['version']}); upgrade senet to read it.")
    ub = doc["userblock"]
    if ub < 512 or ub & (ub - 1) or ub < 12 + length or ub >= size:
        raise _damaged(path, f"its header gives an impossible data offset {ub}")
    _check_meta(path, doc["meta"])
    return doc


def read(path, checksum_only=False, checked=False) -> tuple[dict | None, dict]:
    """({layer: [arrays]}, meta) of a senet weights file, verified before HDF5 parses it.

    `checksum_only`: verify, return (None, meta) without parsing; `checked`: the checksum was
    verified already (by a `checksum_only` call), do not hash the file again.
    """
    import h5py

    path = os.fspath(path)
    doc = read_header(path)
    if doc is None:
        raise WeightsFileError(f"{path} is not a senet weights file (no senet header); "
                               "convert the source file with `senet convert`.")
    if not checked:
        try:
            sound = _sha256_from(path, doc["userblock"]) == doc["body_sha256"]
        except OSError as err:
            raise WeightsFileError(f"{path}: cannot read the file ({err.strerror or err}).") from None
        if not sound:
            raise _damaged(path, "its contents do not match the checksum written with them")
    if checksum_only:
        return None, doc["meta"]
    try:
        with h5py.File(path, "r") as f:
            weights = _arrays(f)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise _damaged(path, one_line(err)[:300]) from None
    return weights, doc["meta"]


def _outside(obj, size) -> str | None:
    """Why reading HDF5 object `obj` of a `size`-byte file could reach outside it, or None.

    HDF5 follows external links and external or virtual storage to any path (/dev/stdin
    blocks, /dev/zero never ends), and a dataset may declare more elements than any file
    holds; each is refused before a byte is read.
    """
    import h5py

    if isinstance(obj, h5py.Dataset):
        if obj.external or obj.is_virtual:
            return f"dataset {obj.name!r} keeps its data outside the file"
        if obj.size * obj.dtype.itemsize > size:
            return f"dataset {obj.name!r} declares more bytes than the file has"
    for key in obj.attrs:
        attr = obj.attrs.get_id(key)
        if attr.get_storage_size() > size or attr.shape is not None and (
                math.prod(attr.shape) * attr.dtype.itemsize > size):
            return f"attribute {key!r} of {obj.name!r} declares more bytes than the file has"
    return None


def _arrays(f) -> dict:
    """{layer: [arrays]} of the HDF5 groups, each holding datasets '0'..'n-1'."""
    import h5py

    size = os.path.getsize(f.filename)
    weights = {}
    for name in f:
        g = f[name] if isinstance(f.get(name, getlink=True), h5py.HardLink) else None
        if not isinstance(g, h5py.Group) or sorted(g) != [str(i) for i in range(len(g))]:
            raise ValueError(f"layer {name!r} is not a group of datasets 0..n-1")
        arrays = []
        for i in range(len(g)):
            ds = g[str(i)] if isinstance(g.get(str(i), getlink=True), h5py.HardLink) else None
            problem = "not a dataset" if not isinstance(ds, h5py.Dataset) else _outside(ds, size)
            if problem:
                raise ValueError(f"layer {name!r}, weight {i}: {problem}")
            arrays.append(np.asarray(ds[()], dtype=np.float32))
        weights[name] = arrays
    return weights


# --------------------------------------------------------------------------- other HDF5 files

_PROBE = """
import sys
sys.path.insert(0, sys.argv[2])
from senet.weights.native import _probe_child
_probe_child(sys.argv[1])
"""


def _probe_child(path) -> None:
    """In the probe's child process: read every object of `path`, or exit with the reason."""
    import h5py

    size = os.path.getsize(path)
    try:  # a crafted file must not take the machine's memory, even in the child
        import resource

        limit = (2 << 30) + 4 * size
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    with h5py.File(path, "r") as f:
        link = f.visititems_links(
            lambda name, l: name if isinstance(l, h5py.ExternalLink) else None)
        if link:
            sys.exit(f"{link!r} is a link to another file")
        problem = _outside(f, size) or f.visititems(lambda name, obj: _outside(obj, size))
        if problem:
            sys.exit(problem)

        def read(name, obj):
            for key in obj.attrs:
                obj.attrs[key]
            if isinstance(obj, h5py.Dataset):
                obj[()]

        f.visititems(read)


def probe(path) -> None:
    """Parse the whole HDF5 file `path` in a child process with a time limit.

    Raises WeightsFileError when the HDF5 library fails on the file or does not finish in
    time (the library can loop forever on a crafted file); in this process the file has then
    not been touched by HDF5 at all.
    """
    path = os.fspath(path)
    limit = PROBE_SECONDS + os.path.getsize(path) / 50e6
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        proc = subprocess.run([sys.executable, "-c", _PROBE, path, root], capture_output=True,
                              stdin=subprocess.DEVNULL, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise WeightsFileError(
            f"{path}: the HDF5 library did not finish reading this file in {limit:.0f} s; it is "
            "damaged or crafted (HDF5 can loop forever on such files). Write it again.") from None
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        detail = one_line(lines[-1])[:300] if lines else f"exit code {proc.returncode}"
        if proc.returncode < 0:
            detail = f"the HDF5 library crashed on it, signal {-proc.returncode}"
        raise WeightsFileError(f"{path}: not a readable HDF5 weights file ({detail}); it is "
                               "damaged or crafted. Write it again.")


def is_hdf5(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head == HDF5_SIGNATURE


def read_legacy_meta(path) -> dict | None:
    """The metadata of a senet 0.1 file (attribute 'senet'); None for Keras' files. Probes first."""
    import h5py

    probe(path)
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("senet")
        return None if raw is None else _legacy_meta(path, raw)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise WeightsFileError(f"{path}: not a readable HDF5 weights file ({one_line(err)}).") from None


def _legacy_meta(path, raw):
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        raise WeightsFileError(f"{path}: its 'senet' metadata is not valid JSON; convert the "
                               "source file again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != 1:
        raise WeightsFileError(f"{path}: unsupported senet weights metadata; convert the source "
                               "file again.")
    return _check_meta(path, meta)


def read_legacy(path) -> tuple[dict, dict]:
    """({layer: [arrays]}, meta) of a senet 0.1 file, after `read_legacy_meta` (which probes)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            meta = _legacy_meta(path, f.attrs.get("senet"))
            weights = _arrays(f)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise WeightsFileError(f"{path}: not a readable senet weights file ({one_line(err)}).") from None
    if _content_hash(weights) != meta.get("sha256"):
        raise _damaged(path, "its arrays do not match the checksum written with them")
    return weights, meta


def _content_hash(weights: dict) -> str:
    """senet 0.1's checksum over the arrays."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        for a in weights[name]:
            a = np.ascontiguousarray(a, dtype=np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- checking, applying

def expected_shapes(model) -> dict:
    """{layer: [shapes]} of every layer of `model` that has weights."""
    return {l.name: [tuple(w.shape) for w in l.weights] for l in model.layers if l.weights}


def check(weights: dict, expected: dict, source: str, allow_missing_head=False) -> None:
    """Raise one error listing every missing, unexpected and wrongly shaped layer."""
    missing = [n for n in expected if n not in weights]
    extra = [n for n in weights if n not in expected
             and not (allow_missing_head and n in HEAD_LAYERS)]
    wrong = []
    for name, shapes in expected.items():
        if name in weights:
            got = [tuple(np.shape(a)) for a in weights[name]]
            if got != shapes:
                wrong.append(f"{name} has {got}, the model needs {shapes}")
    if missing or extra or wrong:
        parts = []
        for label, items in (("missing layers", missing), ("layers the model does not have", extra),
                             ("wrong shapes", wrong)):
            if items:
                more = f" (and {len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{label}: {'; '.join(items[:8])}{more}")
        raise WeightsFileError(f"{source} does not fit this architecture: " + ". ".join(parts)
                               + ". Check that the file and the model name belong together.")


def apply(model, weights: dict, source: str, skip=()) -> None:
    """Set `model`'s weights from {layer: [arrays]}, after checking every name and shape.

    Layers in `skip` (a new head) keep their initial weights.
    """
    expected = {k: v for k, v in expected_shapes(model).items() if k not in skip}
    check({k: v for k, v in weights.items() if k not in skip}, expected, source,
          allow_missing_head=True)
    for layer in model.layers:
        if layer.name in expected and layer.name in weights:
            layer.set_weights(weights[layer.name])
