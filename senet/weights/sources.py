"""Any supported weights file to {Keras layer name: [arrays]} plus what the file implies.

| kind        | read by                                 | layout              | input | classes |
|-------------|-----------------------------------------|---------------------|-------|---------|
| caffe       | `senet.weights.caffe` (own protobuf)    | caffe               | caffe | devkit  |
| torch       | `senet.weights.torch_format` (no pickle code runs) | timm or timm_legacy | torch | sorted |
| safetensors | the `safetensors` library               | timm or timm_legacy | torch | sorted  |
| tf1         | `senet.weights.tf1_checkpoint`          | tf1                 | caffe | devkit  |
| senet       | `senet.weights.native`                  | (already mapped)    | recorded | recorded |

The kind comes from the file's content, not its name. PyTorch-style files say their layout
by their names (`layer0.conv1` is timm's legacy SENet). Nothing here builds a model.
"""

from __future__ import annotations

import os

from senet.errors import ConversionError, WeightsFileError, one_line
from senet.variants import Variant
from senet.weights import layouts, native

KINDS = ("caffe", "torch", "safetensors", "tf1", "senet")
_FORMAT_DEFAULTS = {
    "caffe": {"layout": "caffe", "input": "caffe", "class_order": "devkit"},
    "torch": {"input": "torch", "class_order": "sorted"},
    "safetensors": {"input": "torch", "class_order": "sorted"},
    "tf1": {"layout": "tf1", "input": "caffe", "class_order": "devkit"},
}


def detect(path) -> str:
    """The kind of weights file at `path`, from its content (not its name)."""
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(".index") or ".data-" in os.path.basename(path) \
            or (not os.path.exists(path) and os.path.exists(path + ".index")):
        return "tf1"
    if not os.path.exists(path):
        raise WeightsFileError(f"{path}: no such file.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(native.MAGIC) or head.startswith(native.HDF5_SIGNATURE):
        return "senet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80") or path.endswith((".pth", ".pt", ".bin")):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" \
            and int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8:
        return "safetensors"  # a little-endian uint64 header length, then the JSON header
    return "caffe"


def read_safetensors(path) -> dict:
    """All tensors of a safetensors file as float arrays (the library validates the header)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise WeightsFileError(f"{os.fspath(path)}: not a readable safetensors file "
                               f"({one_line(err)}).") from None


def torch_layout(state: dict) -> str:
    """Which PyTorch naming a state dict uses."""
    if any(k.startswith("layer0.") for k in state):
        return "timm_legacy"
    return "timm"


def read_raw(path, kind: str, prototxt=None):
    """(raw parameters by source name, defaults for meta) of a file of `kind`."""
    what = os.fspath(path)
    if kind == "caffe":
        from senet.weights import caffe

        layer_list = caffe.read_caffemodel(path)
        return (layer_list, _caffe_eps(prototxt, layer_list)), dict(_FORMAT_DEFAULTS["caffe"])
    if kind in ("torch", "safetensors"):
        if kind == "torch":
            from senet.weights.torch_format import read_state_dict

            state = read_state_dict(path)
        else:
            state = read_safetensors(path)
        return state, {**_FORMAT_DEFAULTS[kind], "layout": torch_layout(state)}
    if kind == "tf1":
        from senet.weights.tf1_checkpoint import read_checkpoint

        return read_checkpoint(path), dict(_FORMAT_DEFAULTS["tf1"])
    raise ConversionError(f"Unknown source kind {kind!r}; use one of {', '.join(KINDS)}.")


def map_raw(raw, layout: str, variant: Variant, what: str) -> dict:
    """Source parameters in `layout` to {Keras layer: [arrays]} for `variant`."""
    if layout == "caffe":
        layer_list, eps = raw
        return layouts.from_caffe(layer_list, variant, what, eps)
    if layout == "timm":
        return layouts.from_timm(raw, variant, what)
    if layout == "timm_legacy":
        return layouts.from_timm_legacy(raw, variant, what)
    if layout == "tf1":
        return layouts.from_tf1(raw, variant, what)
    raise ConversionError(f"Unknown layout {layout!r}; use one of {', '.join(layouts.LAYOUTS)}.")


def _caffe_eps(prototxt, caffe_layers) -> dict:
    """BatchNorm eps by layer name, from the prototxt if given (else from the caffemodel)."""
    eps = {l.name: l.bn_eps for l in caffe_layers if l.bn_eps is not None}
    if prototxt:
        from senet.weights import caffe

        eps.update(caffe.prototxt_bn_eps(prototxt))  # checks the untrusted text's structure
    return eps


def read(path, variant: Variant, kind=None, prototxt=None, layout=None) -> tuple[dict, dict]:
    """({Keras layer: [arrays]}, meta) of any supported file, in the source's class order.

    meta: input convention, class order, layout and the source's kind and file name.
    """
    kind = kind or detect(path)
    what = os.fspath(path)
    if kind == "senet":
        weights, meta = read_native(path)
        if meta.get("model") != variant.name:
            raise ConversionError(f"{what} holds weights for {meta.get('model')}, not "
                                  f"{variant.name}.")
        return weights, meta
    raw, meta = read_raw(path, kind, prototxt)
    meta["layout"] = layout or meta["layout"]
    weights = map_raw(raw, meta["layout"], variant, what)
    meta["source"] = {"kind": kind, "file": os.path.basename(os.path.normpath(what))}
    return weights, meta


def read_native(path, trusted=False) -> tuple[dict, dict]:
    """A senet weights file of either version.

    The checksum proves a file undamaged, not who wrote it: a file crafted with a valid
    checksum could still crash or hang the HDF5 library. So a file from elsewhere is parsed
    in a child process first (`native.probe`, a fraction of a second); only the cache that
    senet writes itself is `trusted`.
    """
    if native.read_header(path) is not None:
        if trusted:
            return native.read(path)
        native.read(path, checksum_only=True)  # damage is said before the child runs
        native.probe(path)
        return native.read(path, checked=True)
    meta = native.read_legacy_meta(path)
    if meta is None:
        raise WeightsFileError(f"{os.fspath(path)} is a Keras weights file, not a senet one: "
                               "load it with weights=<file> on the model that saved it.")
    return native.read_legacy(path)
