"""Published weights files to the project's own file, checked against the built model.

`convert` is `senet convert`: read any supported source (Caffe, PyTorch, safetensors, TF1,
senet), map its names, put the classes in the requested order, build the architecture once
to check every layer's shape, and write the result atomically. With `model="arch.tag"` the
file is taken as that catalogue entry's (by hand, for offline use): its layout, classes and
preprocessing are recorded, and its sha256 is compared with the catalogue's.
"""

from __future__ import annotations

import os

from senet import catalogue
from senet.errors import ArgumentError
from senet.variants import Variant, get_variant
from senet.weights import hub, layouts, native, sources


def read(src, model, *, kind=None, prototxt=None, class_order="sorted") -> tuple[dict, dict]:
    """({Keras layer: [arrays]}, meta) of `src` for `model` ('arch', 'arch.tag' or a
    `Variant`), not yet checked against the built model."""
    if isinstance(model, Variant):
        variant, entry = model, None
    else:
        arch, tag = catalogue.split(model)
        variant = get_variant(arch)
        entry = catalogue.find(model) if tag else None
    kind = kind or sources.detect(src)
    if kind not in sources.KINDS:
        raise ArgumentError(f"Unknown source kind {kind!r}; use one of {', '.join(sources.KINDS)}.")
    weights, found = sources.read(src, variant, kind, prototxt,
                                  layout=entry.layout if entry and kind != "senet" else None)
    if kind == "senet":
        return weights, found
    order = layouts.reorder_classes(weights, found["class_order"], class_order)
    classes = int(weights["classifier"][0].shape[-1]) if "classifier" in weights else None
    meta = {"model": variant.name, "classes": classes, "input": found["input"],
            "class_order": order, "layout": found["layout"], "source": found["source"]}
    if entry is not None:
        sha = hub.sha256_file(src) if os.path.isfile(src) else None
        pinned = entry.sha256 if entry.hub else entry.url_sha256
        meta.update(tag=entry.key, class_set=entry.classes, preprocessing=entry.preprocessing(),
                    top1=entry.top1, license=entry.license)
        # True/False against a pinned sha256; None when the catalogue pins none for it
        meta["source"].update(sha256=sha, published=(bool(sha and sha.startswith(pinned))
                                                      if pinned else None))
    elif classes == 1000:
        meta["class_set"] = "imagenet-1k"
    elif classes == 11821:
        meta["class_set"] = "imagenet-12k"
    return weights, meta


def convert(src, model, output, *, kind=None, prototxt=None, class_order="sorted") -> dict:
    """Convert the weights file `src` for `model` and write `output`; returns the metadata.

    Every layer is checked against the built architecture before anything is written; the
    output appears atomically, complete or not at all.
    """
    from senet.blocks import weights_to_come
    from senet.models import build

    weights, meta = read(src, model, kind=kind, prototxt=prototxt, class_order=class_order)
    variant = get_variant(meta["model"])
    classes = meta.get("classes")
    with weights_to_come():  # only its shapes are used
        reference = build(variant, include_top=classes is not None, classes=classes or 1000,
                          classifier_activation=None)
    native.check(weights, native.expected_shapes(reference), os.fspath(src))
    if classes is None:  # a backbone without a classifier
        meta["classes"] = 0
    native.save(output, weights, meta)
    return meta
