"""Each published source's parameter names, mapped onto the models' layer names.

| layout       | names                                          | for                          |
|--------------|------------------------------------------------|------------------------------|
| timm         | `conv1`, `layer1.0.conv2`, `layer1.0.se.fc1`, `fc` | timm's ResNet class (modern) |
| timm_legacy  | `layer0.conv1`, `layer1.0.se_module.fc1`, `last_linear` | timm's legacy SENet class |
| tf1          | `<caffe name>/kernel`, `<caffe name>/bn/gamma` | the original TensorFlow port |
| caffe        | official prototxt layer names                  | the authors' .caffemodel     |

Every mapping yields {Keras layer name: [arrays in `layer.get_weights()` order]} and never
builds a model (the caller checks the result against the model it built). The layer names
come from `senet.variants` (`stem_convs`, `unit_convs`, `units`), the same functions the
builder uses.
"""

from __future__ import annotations

import numpy as np

from senet.errors import ConversionError
from senet.imagenet import CLASS_ORDERS, devkit_to_sorted
from senet.variants import Variant, keras_name, stem_convs, unit_convs, units

BN_EPSILON = 1e-5  # the models' BatchNorm epsilon (senet.blocks.BN_EPSILON)
LAYOUTS = ("timm", "timm_legacy", "tf1", "caffe")


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

    def has(self, key):
        return key in self.arrays

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
                                  + ". Check that the file and the model name belong together.")


def _torch_conv(w):
    """(out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out). Caffe uses the same layout."""
    return np.transpose(w, (2, 3, 1, 0)) if w is not None and w.ndim == 4 else w


def _torch_layers(src: _Source):
    """conv(key) and bn(key) readers for PyTorch-style names."""

    def conv(key):
        w = src.get(key + ".weight")
        b = src.get(key + ".bias", optional=True)
        return [_torch_conv(w)] + ([] if b is None else [b])

    def bn(key):
        return [src.get(key + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]

    return conv, bn


def _finish_torch(out, src, variant):
    src.finish(ignore=lambda k: k.endswith("num_batches_tracked"))
    # PyTorch models read RGB; ours read BGR, so reverse the first conv's input channels.
    stem = keras_name(stem_convs(variant)[0])
    if out[stem][0] is not None:
        out[stem][0] = out[stem][0][:, :, ::-1, :]
    return out


def from_timm_legacy(state: dict, variant: Variant, what: str) -> dict:
    """timm's legacy SENet state dict (`layer0.conv1`, `layer1.0.se_module.fc1`, ...)."""
    if variant.family == "inception":
        raise ConversionError(f"{what}: there is no PyTorch SE-BN-Inception layout to convert; "
                              "convert the official Caffe model instead.")
    src = _Source(state, what)
    conv, bn = _torch_layers(src)
    out = {}
    for i, caffe in enumerate(stem_convs(variant), 1):
        out[keras_name(caffe)] = conv(f"layer0.conv{i}")
        out[keras_name(caffe + "/bn")] = bn(f"layer0.bn{i}")
    for s, u, k in units(variant):
        t = f"layer{s + 1}.{u}"
        for i, suffix in enumerate(unit_convs(variant), 1):
            out[k + suffix] = conv(f"{t}.conv{i}")
            out[k + suffix + "_bn"] = bn(f"{t}.bn{i}")
        out[k + "_1x1_down"] = conv(f"{t}.se_module.fc1")
        out[k + "_1x1_up"] = conv(f"{t}.se_module.fc2")
        if src.has(f"{t}.downsample.0.weight"):
            out[k + "_1x1_proj"] = conv(f"{t}.downsample.0")
            out[k + "_1x1_proj_bn"] = bn(f"{t}.downsample.1")
    w, b = src.get("last_linear.weight", optional=True), src.get("last_linear.bias", optional=True)
    if w is not None:
        out["classifier"] = [w.T, b]
    return _finish_torch(out, src, variant)


def from_timm(state: dict, variant: Variant, what: str) -> dict:
    """timm's ResNet-class state dict (`conv1.0`, `bn1`, `layer1.0.se.fc1`, `fc`, ...).

    A deep stem is `conv1.{0,1,3,4,6}` (conv, BN, -, conv, BN, -, conv) then `bn1`; an
    average-pool shortcut is `downsample.{1,2}` (`downsample.0` is the pool).
    """
    if variant.family == "inception":
        raise ConversionError(f"{what}: timm has no SE-BN-Inception; convert the official "
                              "Caffe model instead.")
    src = _Source(state, what)
    conv, bn = _torch_layers(src)
    out = {}
    stem = stem_convs(variant)
    if len(stem) == 3:
        convs, bns = ["conv1.0", "conv1.3", "conv1.6"], ["conv1.1", "conv1.4", "bn1"]
    else:
        convs, bns = ["conv1"], ["bn1"]
    for caffe, c, n in zip(stem, convs, bns):
        out[keras_name(caffe)] = conv(c)
        out[keras_name(caffe + "/bn")] = bn(n)
    for s, u, k in units(variant):
        t = f"layer{s + 1}.{u}"
        for i, suffix in enumerate(unit_convs(variant), 1):
            out[k + suffix] = conv(f"{t}.conv{i}")
            out[k + suffix + "_bn"] = bn(f"{t}.bn{i}")
        out[k + "_1x1_down"] = conv(f"{t}.se.fc1")
        out[k + "_1x1_up"] = conv(f"{t}.se.fc2")
        first = 1 if variant.shortcut == "avg" else 0  # downsample.0 is the pool
        if src.has(f"{t}.downsample.{first}.weight"):
            out[k + "_1x1_proj"] = conv(f"{t}.downsample.{first}")
            out[k + "_1x1_proj_bn"] = bn(f"{t}.downsample.{first + 1}")
    w, b = src.get("fc.weight", optional=True), src.get("fc.bias", optional=True)
    if w is not None:
        out["classifier"] = [w.T, b]
    return _finish_torch(out, src, variant)


_TF_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def from_tf1(ckpt: dict, variant: Variant, what: str) -> dict:
    """The original TF port: `<caffe name>/kernel|bias`, `<caffe name>/bn/<var>`, `dense/*`."""
    src = _Source(ckpt, what)
    found = {}
    for name in ckpt:
        layer, _, var = name.rpartition("/")
        if layer.endswith("/bn") and var in _TF_BN:
            found.setdefault(layer, "bn")
        elif var in ("kernel", "bias") and layer:
            found.setdefault(layer, "conv")
    out = {}
    for layer, kind in found.items():
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
            f = float(blobs[2].reshape(-1)[0]) if blobs[2].size else 0.0
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


def reorder_classes(weights: dict, have: str, want: str) -> str:
    """Permute the classifier in place from class order `have` to `want`; returns `want`."""
    if want not in CLASS_ORDERS:
        raise ConversionError(f"class order must be 'sorted' or 'devkit', not {want!r}.")
    if have == want or "classifier" not in weights:
        return have if "classifier" not in weights else want
    kernel, bias = weights["classifier"]
    if kernel.shape[-1] != 1000:
        raise ConversionError(f"The classifier has {kernel.shape[-1]} outputs, not the 1000 "
                              f"ImageNet classes, so it cannot be reordered; use --class-order "
                              f"{have}.")
    perm = devkit_to_sorted() if want == "sorted" else np.argsort(devkit_to_sorted())
    weights["classifier"] = [kernel[:, perm], bias[perm]]
    return want
