"""Class tables (ImageNet-1k in two orders, timm's ImageNet-12k, a dataset's own names), the input
convention of every SE model, and decoding.

Every model this package builds takes the official Caffe input: BGR, 0-255, minus the mean
(104, 117, 123), no std. Weights trained with another convention (timm's RGB mean/std) get
an exact adapter layer at load time, so `preprocess_input` is the only preprocessing there is.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from senet.errors import ArgumentError
from senet.variants import CAFFE_MEAN_BGR

CLASS_ORDERS = ("sorted", "devkit")
CLASS_SETS = {"imagenet-1k": 1000, "imagenet-12k": 11821}

# Input conventions of the published weights: channel order, scale to apply to 0-255 pixels,
# then mean and std in that scale. "caffe" is the models' own input.
CONVENTIONS = {
    "caffe": {"order": "BGR", "scale": 1.0, "mean": CAFFE_MEAN_BGR, "std": (1.0, 1.0, 1.0)},
    "torch": {"order": "RGB", "scale": 1 / 255, "mean": (0.485, 0.456, 0.406),
              "std": (0.229, 0.224, 0.225)},
}


def _read(name):
    return resources.files("senet").joinpath("data", name).read_text(encoding="utf-8").splitlines()


@functools.cache
def class_table(order: str = "sorted") -> tuple[tuple[str, str], ...]:
    """(wnid, name) of the 1000 ILSVRC2012 classes in `order` ('sorted' or 'devkit')."""
    if order not in CLASS_ORDERS:
        raise ArgumentError(f"Unknown class order {order!r}; use 'sorted' or 'devkit'.")
    sorted_rows = [line.split(" ", 1) for line in _read("synset_words_sorted.txt") if line]
    table = tuple((w, n.split(",")[0].strip()) for w, n in sorted_rows)
    if order == "sorted":
        return table
    names = dict(table)
    return tuple((w, names[w]) for w in (l.strip() for l in _read("synsets_devkit_order.txt")) if w)


@functools.cache
def imagenet12k_table() -> tuple[tuple[str, str], ...]:
    """(wnid, name) of timm's 11,821 ImageNet-12k classes, in the `*.sw_in12k` heads' order."""
    rows = [line.split(" ", 1) for line in _read("imagenet12k_synsets.txt") if line]
    return tuple((w, n.split(",")[0].strip()) for w, n in rows)


def labels(meta: dict | None, n_outputs: int | None = None) -> tuple[tuple[str, str], ...]:
    """(id, name) of each output of a model, from its weights' metadata.

    A dataset's own classes (`class_names`, written by `senet train`) name themselves;
    ImageNet heads use their class set and order. Without metadata, the output width decides.
    """
    meta = meta or {}
    if meta.get("class_names"):
        return tuple((n, n) for n in meta["class_names"])
    class_set = meta.get("class_set") or {11821: "imagenet-12k"}.get(n_outputs, "imagenet-1k")
    if class_set == "imagenet-12k":
        return imagenet12k_table()
    return class_table(meta.get("class_order", "sorted"))


@functools.cache
def devkit_to_sorted() -> np.ndarray:
    """perm such that outputs_sorted = outputs_devkit[..., perm] (sorted id -> devkit id)."""
    devkit = {w: i for i, (w, _) in enumerate(class_table("devkit"))}
    return np.array([devkit[w] for w, _ in class_table("sorted")])


def preprocess_input(x, data_format=None):
    """RGB images, 0-255, to the models' input: BGR, 0-255, minus the Caffe mean.

    Accepts a NumPy array or a backend tensor of shape (..., H, W, 3) (or (..., 3, H, W)
    with `data_format="channels_first"`); returns float32 of the same shape. Keras is
    imported only when needed (no data_format given, or a backend tensor): the CLI's engines
    preprocess NumPy batches without loading a Keras backend.
    """
    if data_format is None:
        import keras

        data_format = keras.config.image_data_format()
    axis = -3 if data_format == "channels_first" else -1
    mean = np.array(CAFFE_MEAN_BGR, "float32").reshape((3, 1, 1) if axis == -3 else (3,))
    if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
        x = np.asarray(x, dtype="float32")
        if x.shape[axis] != 3:
            raise ArgumentError(f"preprocess_input expects 3 RGB channels on axis {axis} "
                             f"({data_format}); got an array of shape {x.shape}.")
        return np.flip(x, axis=axis) - mean
    import keras

    x = keras.ops.cast(x, "float32")
    return keras.ops.flip(x, axis=axis) - mean


def decode_predictions(preds, top=5, class_order="sorted", model=None):
    """Top-`top` classes of each row of `preds` as (id, name, score) tuples.

    The classes are those of `model`'s weights when it is given (ImageNet-1k, ImageNet-12k or
    a dataset's own), else ImageNet-1k in `class_order` ('sorted' for every converted model
    unless it was converted with `--class-order devkit`), or ImageNet-12k for 11,821 columns.
    """
    preds = np.asarray(preds)
    meta = getattr(model, "senet_weights", None) if model is not None else {"class_order": class_order}
    table = labels(meta, preds.shape[-1] if preds.ndim == 2 else None)
    if preds.ndim != 2 or preds.shape[1] != len(table):
        raise ArgumentError(f"decode_predictions expects predictions of shape (samples, "
                            f"{len(table)}); got shape {preds.shape}.")
    results = []
    for row in preds:
        idx = np.argsort(row)[::-1][:top]
        results.append([(table[i][0], table[i][1], float(row[i])) for i in idx])
    return results


def input_adapter(convention: str):
    """A layer turning the models' Caffe input into `convention`'s, exactly (no padding yet).

    Channel order needs no work: converters reverse the first conv's input channels instead.
    """
    import keras

    if convention not in CONVENTIONS:
        raise ArgumentError(f"Unknown input convention {convention!r}; known: {', '.join(CONVENTIONS)}.")
    c = CONVENTIONS[convention]
    bgr = slice(None, None, -1) if c["order"] == "RGB" else slice(None)
    mean, std = np.array(c["mean"])[bgr], np.array(c["std"])[bgr]
    # x_conv = ((x_caffe + caffe_mean) * scale - mean) / std
    scale = c["scale"] / std
    offset = (np.array(CAFFE_MEAN_BGR) * c["scale"] - mean) / std
    if keras.config.image_data_format() == "channels_first":
        scale, offset = scale.reshape(3, 1, 1), offset.reshape(3, 1, 1)
    return keras.layers.Rescaling(scale.tolist(), offset.tolist(), name=f"input_from_caffe_to_{convention}")
