"""The project's own weights file (`.weights.h5`): arrays by Keras layer name, plus provenance.

Layout: one HDF5 group per Keras layer, holding datasets "0", "1", ... in `layer.get_weights()`
order; the root attribute `senet` holds JSON metadata: the model name, where the weights came
from, the input convention they were trained with, the class order of the classifier, and a
sha256 of the arrays so that a damaged file is detected rather than loaded.
Every converter produces `{layer name: [arrays]}`; this module alone reads and writes it.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from senet._io import atomic_path

FORMAT = "senet-weights"
VERSION = 1
HEAD_LAYERS = ("classifier",)  # present in files, absent from include_top=False models


class WeightsFileError(ValueError):
    """A weights file that cannot be used, with what is wrong and what to do."""


def content_hash(weights: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        for a in weights[name]:
            a = np.ascontiguousarray(a, dtype=np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def save(path, weights: dict, meta: dict) -> None:
    """Write `weights` ({layer: [arrays]}) and `meta` atomically to `path`."""
    import h5py

    meta = {"format": FORMAT, "version": VERSION, **meta, "sha256": content_hash(weights)}
    with atomic_path(path, suffix=".weights.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["senet"] = json.dumps(meta)
            for name, arrays in weights.items():
                g = f.create_group(name)
                for i, a in enumerate(arrays):
                    g.create_dataset(str(i), data=np.asarray(a, dtype=np.float32))


def read_meta(path) -> dict | None:
    """The metadata of a senet weights file; None for any other HDF5 file (e.g. Keras')."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("senet")
    except OSError as err:
        raise WeightsFileError(
            f"{os.fspath(path)}: not a readable HDF5 weights file ({err}). Write weights files "
            "with `senet convert` or `model.save_weights`.") from None
    if raw is None:
        return None
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise WeightsFileError(f"{os.fspath(path)}: weights file format {meta.get('format')} "
                               f"v{meta.get('version')} is not supported by this senet version.")
    return meta


def read(path, verify=True) -> tuple[dict, dict]:
    """({layer: [arrays]}, meta) of a senet weights file; checks the content hash."""
    import h5py

    meta = read_meta(path)
    if meta is None:
        raise WeightsFileError(f"{os.fspath(path)} is not a senet weights file (no 'senet' "
                               "metadata); convert the source file with `senet convert`.")
    try:
        with h5py.File(path, "r") as f:
            weights = {name: [g[str(i)][()] for i in range(len(g))] for name, g in f.items()}
    except (OSError, KeyError) as err:
        raise WeightsFileError(f"{os.fspath(path)} is damaged ({err}); convert it again.") from None
    if verify and content_hash(weights) != meta.get("sha256"):
        raise WeightsFileError(f"{os.fspath(path)} is damaged: its arrays do not match the "
                               "checksum written with them. Convert or download it again.")
    return weights, meta


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


def apply(model, weights: dict, source: str) -> None:
    """Set `model`'s weights from {layer: [arrays]}, after checking every name and shape."""
    expected = expected_shapes(model)
    check(weights, expected, source, allow_missing_head=True)
    for layer in model.layers:
        if layer.name in expected:
            layer.set_weights(weights[layer.name])
