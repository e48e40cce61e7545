"""Published weights to the project's own file: detect the source, map names, check, save.

Each source's reader (caffe, torch_format, tf1_checkpoint) knows its file format; this module
knows how each source names the SENet layers and which conventions it carries:

| source | layer names             | input convention          | class order |
|--------|-------------------------|---------------------------|-------------|
| caffe  | official prototxt names | BGR 0-255 minus mean      | devkit      |
| torch  | timm/Cadene state dict  | RGB /255, mean/std        | sorted      |
| tf1    | official names, TF vars | BGR minus mean (in graph) | devkit      |
| senet  | this project's file     | recorded in the file      | recorded    |

Every mapping yields {Keras layer name: [arrays in `layer.get_weights()` order]}.
"""

from __future__ import annotations

import os

import numpy as np

from senet.blocks import BN_EPSILON, keras_name
from senet.imagenet import CLASS_ORDERS, devkit_to_sorted
from senet.variants import Variant, get_variant
from senet.weights import native

SOURCES = ("caffe", "torch", "tf1", "senet")


class ConversionError(ValueError):
    """A source file that does not map onto the requested architecture."""


def detect(path) -> str:
    """The kind of weights file at `path`, from its content (not its name)."""
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(".index") or ".data-" in os.path.basename(path) \
            or os.path.exists(path + ".index"):
        return "tf1"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x89HDF"):
        return "senet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80") or path.endswith((".pth", ".pt")):
        return "torch"
    return "caffe"


# --------------------------------------------------------------------------- helpers

class _Source:
    """A name -> array lookup that remembers which names were missing or never used."""

    def __init__(self, arrays, what):
        self.arrays, self.what = arrays, what
        self.used, self.missing = set(), []

    def get(self, key, optional=False):
        if key in self.arrays:
            self.used.add(key)
            return np.asarray(self.arrays[key], dtype=np.float32)
        if not optional:
            self.missing.append(key)
        return None

    def finish(self, ignore=lambda k: False):
        unused = [k for k in self.arrays if k not in self.used and not ignore(k)]
        if self.missing or unused:
            parts = []
            if self.missing:
                more = f" (and {len(self.missing) - 8} more)" if len(self.missing) > 8 else ""
                parts.append("missing " + ", ".join(self.missing[:8]) + more)
            if unused:
                more = f" (and {len(unused) - 8} more)" if len(unused) > 8 else ""
                parts.append("not part of this architecture: " + ", ".join(unused[:8]) + more)
            raise ConversionError(f"{self.what}: " + "; ".join(parts)
                                  + ". Check that the file and --model belong together.")


def _torch_conv(w):
    """(out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out). Caffe uses the same layout."""
    return np.transpose(w, (2, 3, 1, 0))


def _unit_convs(variant: Variant):
    if variant.family == "inception":
        return []
    return ["_3x3a", "_3x3b"] if variant.block == "basic" else ["_1x1_reduce", "_3x3", "_1x1_increase"]


def _stem_convs(variant: Variant):
    if variant.stem == "3x3":
        return ["conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3"]
    return ["conv1/7x7_s2"]


# --------------------------------------------------------------------------- timm / Cadene

def from_torch(state: dict, variant: Variant, what: str) -> dict:
    """timm's legacy SENet state dict (`layer0.conv1`, `layer1.0.se_module.fc1`, ...)."""
    if variant.family == "inception":
        raise ConversionError(f"{what}: there is no PyTorch SE-BN-Inception layout to convert; "
                              "convert the official Caffe model instead.")
    src = _Source(state, what)

    def conv(key):
        w = src.get(key + ".weight")
        b = src.get(key + ".bias", optional=True)
        return [_torch_conv(w) if w is not None else None] + ([] if b is None else [b])

    def bn(key):
        return [src.get(key + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]

    out = {}
    for i, caffe in enumerate(_stem_convs(variant), 1):
        out[keras_name(caffe)] = conv(f"layer0.conv{i}")
        out[keras_name(caffe + "/bn")] = bn(f"layer0.bn{i}")
    for s, depth in enumerate(variant.depths):
        for u in range(depth):
            t, k = f"layer{s + 1}.{u}", f"conv{s + 2}_{u + 1}"
            for i, suffix in enumerate(_unit_convs(variant), 1):
                out[k + suffix] = conv(f"{t}.conv{i}")
                out[k + suffix + "_bn"] = bn(f"{t}.bn{i}")
            out[k + "_1x1_down"] = conv(f"{t}.se_module.fc1")
            out[k + "_1x1_up"] = conv(f"{t}.se_module.fc2")
            if f"{t}.downsample.0.weight" in state:
                out[k + "_1x1_proj"] = conv(f"{t}.downsample.0")
                out[k + "_1x1_proj_bn"] = bn(f"{t}.downsample.1")
    w, b = src.get("last_linear.weight"), src.get("last_linear.bias")
    out["classifier"] = [None if w is None else w.T, b]
    src.finish(ignore=lambda k: k.endswith("num_batches_tracked"))
    # timm's first conv reads RGB; the models read BGR, so reverse its input channels.
    stem = keras_name(_stem_convs(variant)[0])
    out[stem][0] = out[stem][0][:, :, ::-1, :]
    return out


# --------------------------------------------------------------------------- TF1 port

_TF_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def from_tf1(ckpt: dict, variant: Variant, what: str) -> dict:
    """The original TF port: `<caffe name>/kernel|bias`, `<caffe name>/bn/<var>`, `dense/*`."""
    src = _Source(ckpt, what)
    layers = {}
    for name in ckpt:
        layer, _, var = name.rpartition("/")
        if layer.endswith("/bn") and var in _TF_BN:
            layers.setdefault(layer, "bn")
        elif var in ("kernel", "bias") and layer:
            layers.setdefault(layer, "conv")
    out = {}
    for layer, kind in layers.items():
        key = "classifier" if layer == "dense" else keras_name(layer)
        if kind == "bn":
            out[key] = [src.get(f"{layer}/{v}") for v in _TF_BN]
        else:
            b = src.get(f"{layer}/bias", optional=True)
            out[key] = [src.get(f"{layer}/kernel")] + ([] if b is None else [b])
    # Optimizer slots, step counters and EMA copies are not weights.
    src.finish(ignore=lambda k: k == "global_step" or "/Momentum" in k or "/Adam" in k
               or "ExponentialMovingAverage" in k)
    return out


# --------------------------------------------------------------------------- Caffe

def from_caffe(caffe_layers, variant: Variant, what: str, eps: dict) -> dict:
    """Official caffemodel layers: Convolution, BatchNorm + Scale, InnerProduct.

    BatchNorm blobs hold mean * f, var * f and f (f == 0 means zero stats); a layer eps
    other than the models' 1e-5 is folded into the variance, which is exact.
    """
    out, problems = {}, []
    by_name = {l.name: l for l in caffe_layers}
    for layer in caffe_layers:
        t, blobs = layer.type, layer.blobs
        if not blobs:
            continue
        if t == "Convolution":
            w = blobs[0]
            out[keras_name(layer.name)] = [_torch_conv(w.reshape(w.shape[-4:]) if w.ndim > 4 else w)] \
                + [b.reshape(-1) for b in blobs[1:2]]
        elif t == "InnerProduct":
            n_out = blobs[1].size if len(blobs) > 1 else None
            w = blobs[0].reshape(n_out, -1) if n_out else blobs[0].reshape(blobs[0].shape[-2:])
            out[keras_name(layer.name)] = [w.T] + [b.reshape(-1) for b in blobs[1:2]]
        elif t == "BatchNorm":
            if len(blobs) < 3:
                problems.append(f"BatchNorm {layer.name} has {len(blobs)} blobs, needs 3")
                continue
            f = float(blobs[2].reshape(-1)[0])
            scale = 0.0 if f == 0 else 1.0 / f
            mean, var = blobs[0].reshape(-1) * scale, blobs[1].reshape(-1) * scale
            var = var + (eps.get(layer.name, BN_EPSILON) - BN_EPSILON)
            scale_layer = by_name.get(layer.name + "/scale")
            if scale_layer is None or len(scale_layer.blobs) < 2:
                problems.append(f"BatchNorm {layer.name} has no Scale layer "
                                f"{layer.name + '/scale'!r} with gamma and beta")
                continue
            gamma, beta = (b.reshape(-1) for b in scale_layer.blobs[:2])
            out[keras_name(layer.name)] = [gamma, beta, mean, var]
        elif t == "Scale" and layer.name.endswith("/bn/scale"):
            continue  # consumed with its BatchNorm
        else:
            problems.append(f"{t} layer {layer.name!r} has weights this converter does not map")
    if problems:
        raise ConversionError(f"{what}: " + "; ".join(problems[:8]))
    return out


def _caffe_eps(prototxt, caffe_layers) -> dict:
    """BatchNorm eps by layer name, from the prototxt if given (else from the caffemodel)."""
    eps = {l.name: l.bn_eps for l in caffe_layers if l.bn_eps is not None}
    if prototxt:
        from senet.weights import caffe

        for layer in caffe.prototxt_layers(caffe.parse_prototxt(prototxt)):
            bn = layer.get("batch_norm_param", [{}])[0]
            if "eps" in bn:
                eps[layer["name"][0]] = float(bn["eps"][0])
    return eps


# --------------------------------------------------------------------------- driver

def read_source(path, variant: Variant, kind=None, prototxt=None):
    """(weights by Keras layer, meta) of any supported file, in the source's class order."""
    kind = kind or detect(path)
    what = os.fspath(path)
    if kind == "caffe":
        from senet.weights import caffe

        layers = caffe.read_caffemodel(path)
        weights = from_caffe(layers, variant, what, _caffe_eps(prototxt, layers))
        meta = {"input": "caffe", "class_order": "devkit"}
    elif kind == "torch":
        from senet.weights.torch_format import read_state_dict

        weights = from_torch(read_state_dict(path), variant, what)
        meta = {"input": "torch", "class_order": "sorted"}
    elif kind == "tf1":
        from senet.weights.tf1_checkpoint import read_checkpoint

        weights = from_tf1(read_checkpoint(path), variant, what)
        meta = {"input": "caffe", "class_order": "devkit"}
    elif kind == "senet":
        weights, meta = native.read(path)
        if meta.get("model") != variant.name:
            raise ConversionError(f"{what} holds weights for {meta.get('model')}, "
                                  f"not {variant.name}.")
        return weights, {k: meta[k] for k in ("input", "class_order", "source")}
    else:
        raise ValueError(f"Unknown source kind {kind!r}; use one of {', '.join(SOURCES)}.")
    meta["source"] = {"kind": kind, "file": os.path.basename(os.path.normpath(what))}
    return weights, meta


def reorder_classes(weights: dict, meta: dict, class_order: str) -> None:
    """Permute the classifier's outputs in place from the file's class order to `class_order`."""
    if class_order not in CLASS_ORDERS:
        raise ValueError(f"--class-order must be 'sorted' or 'devkit', not {class_order!r}.")
    have = meta["class_order"]
    if have == class_order or "classifier" not in weights:
        return
    kernel, bias = weights["classifier"]
    if kernel.shape[-1] != 1000:
        raise ConversionError(f"The classifier has {kernel.shape[-1]} outputs, not the 1000 "
                              "ImageNet classes, so it cannot be reordered; use --class-order "
                              f"{have}.")
    perm = devkit_to_sorted() if class_order == "sorted" else np.argsort(devkit_to_sorted())
    weights["classifier"] = [kernel[:, perm], bias[perm]]
    meta["class_order"] = class_order


def convert(src, model, output, *, kind=None, prototxt=None, class_order="sorted") -> dict:
    """Convert the weights file `src` for `model` (a name) and write the project's own file.

    The result is checked against the Keras model, layer by layer, before anything is
    written; the output appears atomically, complete or not at all. Returns the metadata.
    """
    variant = get_variant(model)
    weights, meta = read_source(src, variant, kind, prototxt)
    reorder_classes(weights, meta, class_order)
    classes = weights["classifier"][0].shape[-1] if "classifier" in weights else 1000
    native.check(weights, expected_layer_shapes(variant, classes), os.fspath(src))
    meta = {"model": variant.name, "classes": int(classes), **meta}
    native.save(output, weights, meta)
    return meta


def expected_layer_shapes(variant: Variant, classes=1000) -> dict:
    """{layer: [weight shapes]} of the classifier model of `variant`."""
    from senet.models import build

    return native.expected_shapes(build(variant, classes=classes, classifier_activation=None))
