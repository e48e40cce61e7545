"""Weights: every published format read into the project's own file, cached and loaded.

`resolve` reads a `weights=` argument before the model is built (its metadata decides the
input adapter); `apply` loads the arrays into the built model.
"""

from __future__ import annotations

import os

from senet.variants import get_variant


def published(name) -> bool:
    """Whether `weights="imagenet"` is available for the variant `name`."""
    return get_variant(name).weights_url is not None


def resolve(variant, weights):
    """(path, arrays, meta) for `weights` ('imagenet' or a file).

    arrays and meta are None for a Keras-format file (e.g. `model.save_weights` after
    fine-tuning), which `apply` hands to Keras.
    """
    from senet.weights import native

    if weights == "imagenet":
        from senet.weights.pretrained import imagenet_weights

        path, (arrays, meta) = imagenet_weights(variant)
    else:
        path = os.fspath(weights)
        meta = native.read_meta(path)
        if meta is None:
            return path, None, None
        arrays, meta = native.read(path)
    if meta.get("model") != variant.name:
        raise native.WeightsFileError(
            f"{path} holds weights for {meta.get('model')}, not {variant.name}; build that "
            f"model (senet.create_model({meta.get('model')!r}, weights=...)) or convert a "
            f"file for {variant.name}.")
    return path, arrays, meta


def apply(model, path, arrays) -> None:
    """Load resolved weights into `model` (built for them)."""
    from senet.weights import native

    if arrays is None:
        model.load_weights(path)
    else:
        native.apply(model, arrays, path)
