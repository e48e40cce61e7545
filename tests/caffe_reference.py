"""A real Caffe implementation (OpenCV's dnn module) as the reference for converter tests.

The official weights are not available offline, so tests build random but well-scaled
caffemodels for the official prototxts and run them through OpenCV, which implements Caffe's
semantics (ceil pooling, BatchNorm factor, grouped convs) independently of this project.
OpenCV has no `Axpy` layer; `opencv_prototxt` rewrites it into stock layers.

Run ``python tests/caffe_reference.py [model ...]`` to print logits ranges and timings.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import time

import numpy as np

from senet.weights.caffe import (CaffeLayer, parse_prototxt, prototxt_layers, read_caffemodel,
                                 write_caffemodel)

# The official prototxts live in shared/reference beside the repository (CI clones it there).
MODELS_DIR = os.environ.get("SENET_REFERENCE_MODELS", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference",
    "senet-caffe", "models"))
BN_FACTORS = (999.982, 0.5, 3.0)  # never 1, so a converter that ignores blob 2 fails


def _one(params, key, default=None):
    values = params.get(key)
    return values[0] if values else default


def _param(layer, name):
    return _one(layer, name, {}) or {}


# ---------------------------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------------------------
# Random BatchNorm statistics do not normalize anything, so activations would drift by orders
# of magnitude over 150 layers (saturating every SE gate and the softmax). Instead each top's
# mean and second moment are tracked analytically (elements treated as Gaussian) and the random
# BN statistics are drawn around those, which keeps every layer O(1) like a trained net.

_NODES = np.linspace(-5.0, 5.0, 201)
_WEIGHTS = np.exp(-0.5 * _NODES ** 2)
_WEIGHTS /= _WEIGHTS.sum()


def _gauss_moments(fn, stats):
    """(mean, second moment) of fn(z) for z Gaussian with the given (mean, second moment)."""
    mean, second = stats
    std = math.sqrt(max(second - mean * mean, 1e-12))
    values = fn(mean + std * _NODES)
    return float(_WEIGHTS @ values), float(_WEIGHTS @ (values * values))


def _conv_geometry(param):
    kernel = param.get("kernel_size", [])
    kh = _one(param, "kernel_h", kernel[0] if kernel else 1)
    kw = _one(param, "kernel_w", kernel[-1] if kernel else 1)
    return kh, kw


def random_layers(prototxt_path, seed=0, input_std=50.0, logit_std=1.0):
    """Random, well-scaled CaffeLayers (every layer, with blobs where Caffe has them)."""
    rng = np.random.default_rng(seed)
    net = parse_prototxt(prototxt_path)
    channels, stats = {}, {}
    out = []
    for name, shape in _net_inputs(net):
        channels[name], stats[name] = shape[1], (0.0, input_std ** 2)
    for layer in prototxt_layers(net):
        name, kind = _one(layer, "name", ""), _one(layer, "type", "")
        bottoms, tops = list(layer.get("bottom", [])), list(layer.get("top", []))
        missing = [b for b in bottoms if b not in channels]
        if missing:
            raise ValueError(f"{prototxt_path}: layer '{name}' reads {missing}, which no "
                             "earlier layer produces")
        src = bottoms[0] if bottoms else None
        blobs = []
        if kind == "Input":
            for top, shape in zip(tops, _param(layer, "input_param").get("shape", [])):
                channels[top], stats[top] = shape["dim"][1], (0.0, input_std ** 2)
            out.append(CaffeLayer(name, kind, bottoms, tops, blobs))
            continue
        mean_in, m_in = stats[src] if src else (0.0, 1.0)
        c_in = channels[src] if src else 0
        c_out, new_stats = c_in, stats.get(src)
        if kind == "Convolution":
            param = _param(layer, "convolution_param")
            c_out = param["num_output"][0]
            group = _one(param, "group", 1)
            kh, kw = _conv_geometry(param)
            fan_in = c_in // group * kh * kw
            se = name.endswith(("_1x1_down", "_1x1_up"))
            # He for convs feeding BN + ReLU; SE convs normalized so the sigmoid stays unsaturated
            std = math.sqrt((1.0 if se else 2.0) / (fan_in * m_in))
            if not se:
                std *= math.sqrt(m_in)  # He assumes the input scale; BN renormalizes after
            blobs.append(rng.normal(0, std, (c_out, c_in // group, kh, kw)))
            m_out = fan_in * std * std * m_in
            if _one(param, "bias_term", True):
                bias_std = 0.1 if se else 0.01 * math.sqrt(m_out)
                blobs.append(rng.normal(0, bias_std, c_out))
                m_out += bias_std ** 2
            new_stats = (0.0, m_out)
        elif kind == "BatchNorm":
            scale = math.sqrt(m_in)
            mean = mean_in + rng.normal(0, 0.1, c_in) * scale
            var = rng.uniform(0.5, 1.5, c_in) * m_in
            factor = float(rng.choice(BN_FACTORS))
            blobs += [mean * factor, var * factor, np.array([factor])]
            centered = m_in - 2 * mean_in * mean + mean * mean
            new_stats = (float(np.mean((mean_in - mean) / np.sqrt(var))),
                         float(np.mean(centered / var)))
        elif kind == "Scale" and len(bottoms) == 1:
            small = name.endswith("_1x1_increase/bn/scale")
            gamma = rng.uniform(0.05, 0.2, c_in) if small else rng.uniform(0.5, 1.0, c_in)
            beta = rng.normal(0, 0.05, c_in)
            blobs.append(gamma)
            if _one(_param(layer, "scale_param"), "bias_term", False):
                blobs.append(beta)
            else:
                beta = np.zeros(c_in)
            new_stats = (float(np.mean(gamma * mean_in + beta)),
                         float(np.mean(gamma ** 2 * m_in + 2 * gamma * beta * mean_in
                                       + beta ** 2)))
        elif kind == "Scale":  # X * per-channel gate (SE-BN-Inception's SE scaling)
            (mx, sx), (ma, sa) = stats[bottoms[0]], stats[bottoms[1]]
            new_stats = (mx * ma, sx * sa)
        elif kind == "Axpy":  # a * X + Y, channels of X
            (ma, sa), (mx, sx), (my, sy) = (stats[b] for b in bottoms)
            c_out = channels[bottoms[1]]
            new_stats = (ma * mx + my, sa * sx + sy + 2 * ma * mx * my)
        elif kind == "Eltwise":
            means = [stats[b][0] for b in bottoms]
            new_stats = (sum(means), sum(stats[b][1] for b in bottoms)
                         + sum(means) ** 2 - sum(mu * mu for mu in means))
        elif kind == "Concat":
            sizes = np.array([channels[b] for b in bottoms], float)
            c_out = int(sizes.sum())
            new_stats = tuple(float(np.dot(sizes, [stats[b][i] for b in bottoms]) / c_out)
                              for i in (0, 1))
        elif kind == "ReLU":
            new_stats = _gauss_moments(lambda z: np.maximum(z, 0.0), stats[src])
        elif kind == "Sigmoid":
            new_stats = _gauss_moments(lambda z: 1.0 / (1.0 + np.exp(-z)), stats[src])
        elif kind == "InnerProduct":
            param = _param(layer, "inner_product_param")
            c_out = param["num_output"][0]
            std = logit_std / math.sqrt(c_in * m_in)
            blobs.append(rng.normal(0, std, (c_out, c_in)))
            if _one(param, "bias_term", True):
                blobs.append(rng.normal(0, 0.1, c_out))
            new_stats = (0.0, logit_std ** 2)
        elif kind in ("Pooling", "Dropout", "Reshape", "Flatten", "Softmax", "Split"):
            pass
        else:
            raise ValueError(f"{prototxt_path}: layer '{name}' has type '{kind}', which "
                             "random_layers does not know")
        for top in tops:
            channels[top], stats[top] = c_out, new_stats
        out.append(CaffeLayer(name, kind, bottoms, tops,
                              [np.asarray(b, np.float32) for b in blobs]))
    return out


def _net_inputs(net):
    """Inputs declared at net level (old style `input:` with `input_shape`/`input_dim`)."""
    names = net.get("input", [])
    shapes = [s["dim"] for s in net.get("input_shape", [])]
    dims = net.get("input_dim", [])
    shapes += [dims[i:i + 4] for i in range(0, len(dims), 4)]
    return list(zip(names, shapes))


def random_caffemodel(prototxt_path, out_path, seed=0, **kwargs):
    """Write a random, well-scaled caffemodel for `prototxt_path`; return its layers.

    Conv weights are He-scaled, BN statistics are drawn around the activations' real scale
    with a moving-average factor != 1, the last BN of each residual branch gets a small gamma,
    and the classifier is scaled so logits are O(1)-O(5) for inputs of std `input_std`.
    """
    layers = random_layers(prototxt_path, seed=seed, **kwargs)
    write_caffemodel(out_path, layers, name=_one(parse_prototxt(prototxt_path), "name", ""))
    return layers


# ---------------------------------------------------------------------------------------------
# OpenCV
# ---------------------------------------------------------------------------------------------

_SCAN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[{}]')


def _top_level_blocks(text):
    """(start, end) character spans of each top-level ``layer {...}``/``layers {...}`` block."""
    blocks, depth, start, last = [], 0, None, 0
    for match in _SCAN_RE.finditer(text):
        token = match.group()
        if token == "{":
            if depth == 0:
                head = re.search(r"\b(layers?)\s*:?\s*$", text[last:match.start()])
                start = last + head.start() if head else None
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                if start is not None:
                    blocks.append((start, match.end()))
                last, start = match.end(), None
            if depth < 0:
                raise ValueError("unbalanced '}' in the prototxt")
        elif depth == 0:  # a string or comment outside any block
            last = match.end()
    return blocks


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _axpy_as_stock_layers(name, bottoms, top):
    gate, x, y = bottoms
    reshape, scaled = name + "/gate_reshape", name + "/gate_scale"
    return (
        f"layer {{\n  name: {_quote(reshape)}\n  type: \"Reshape\"\n  bottom: {_quote(gate)}\n"
        f"  top: {_quote(reshape)}\n  reshape_param {{\n    shape {{\n      dim: 0\n"
        f"      dim: 0\n    }}\n  }}\n}}\n"
        f"layer {{\n  name: {_quote(scaled)}\n  type: \"Scale\"\n  bottom: {_quote(x)}\n"
        f"  bottom: {_quote(reshape)}\n  top: {_quote(scaled)}\n  scale_param {{\n"
        f"    axis: 0\n    bias_term: false\n  }}\n}}\n"
        f"layer {{\n  name: {_quote(name)}\n  type: \"Eltwise\"\n  bottom: {_quote(scaled)}\n"
        f"  bottom: {_quote(y)}\n  top: {_quote(top)}\n  eltwise_param {{\n"
        f"    operation: SUM\n  }}\n}}")


def _input_layer(name, tops, shapes):
    parts = [f"layer {{\n  name: {_quote(name)}\n  type: \"Input\"\n"]
    parts += [f"  top: {_quote(t)}\n" for t in tops]
    parts.append("  input_param {\n")
    for dims in shapes:
        parts.append("    shape {\n" + "".join(f"      dim: {d}\n" for d in dims) + "    }\n")
    parts.append("  }\n}")
    return "".join(parts)


def opencv_prototxt(prototxt_path, input_hw=None, until=None) -> str:
    """The prototxt text with each `Axpy` replaced by Reshape + Scale(axis 0) + Eltwise SUM.

    The replacement keeps the Axpy's top name (and its name, on the Eltwise), so every other
    layer is untouched. `input_hw` changes the Input layer's height and width; `until` drops
    every layer after the one of that name (the 7x7 head pool fails below 224 px, so
    comparisons at odd sizes need a truncated net).
    """
    with open(prototxt_path, encoding="utf-8") as f:
        text = f.read()
    pieces, pos, found_input = [], 0, False
    for start, end in _top_level_blocks(text):
        parsed = prototxt_layers(parse_prototxt(text[start:end]))
        if not parsed:
            continue
        layer = parsed[0]
        kind = _one(layer, "type")
        replacement = None
        if kind == "Axpy":
            bottoms = layer.get("bottom", [])
            if len(bottoms) != 3 or len(layer.get("top", [])) != 1:
                raise ValueError(f"{prototxt_path}: Axpy layer '{_one(layer, 'name')}' needs "
                                 "3 bottoms (gate, X, Y) and 1 top")
            replacement = _axpy_as_stock_layers(_one(layer, "name"), bottoms, layer["top"][0])
        elif kind == "Input" and input_hw is not None:
            found_input = True
            shapes = [list(s["dim"][:2]) + [int(v) for v in input_hw]
                      for s in _param(layer, "input_param").get("shape", [])]
            replacement = _input_layer(_one(layer, "name"), layer.get("top", []), shapes)
        if replacement is not None:
            pieces += [text[pos:start], replacement]
            pos = end
        if until is not None and _one(layer, "name") == until:
            pieces.append(text[pos:end] + "\n")
            pos = None
            break
    if until is not None and pos is not None:
        raise ValueError(f"{prototxt_path}: no layer named {until!r}")
    if pos is not None:
        pieces.append(text[pos:])
    out = "".join(pieces)
    if input_hw is not None and not found_input:
        raise ValueError(f"{prototxt_path}: no Input layer whose size input_hw could change")
    return out


def _output_names(prototxt_path):
    layers = prototxt_layers(parse_prototxt(prototxt_path))
    logits = [_one(l, "name") for l in layers if _one(l, "type") == "InnerProduct"]
    probs = [_one(l, "name") for l in layers if _one(l, "type") == "Softmax"]
    return logits[-1], probs[-1]


def opencv_net(prototxt_path, caffemodel_path, input_hw=None, fusion=False, until=None):
    """An OpenCV net for the prototxt (Axpy rewritten), CPU, float32, no Winograd.

    Fusion is off by default so that every layer's own output can be read by its name.
    """
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        proto = os.path.join(tmp, "net.prototxt")
        with open(proto, "w", encoding="utf-8") as f:
            f.write(opencv_prototxt(prototxt_path, input_hw, until))
        net = cv2.dnn.readNetFromCaffe(proto, os.fspath(caffemodel_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(fusion)
    net.enableWinograd(False)  # Winograd 3x3 convs lose precision; this is a reference
    return net


def opencv_forward(prototxt_path, caffemodel_path, images, net=None):
    """Run OpenCV on NCHW float32 `images` (BGR minus mean); return (logits, probs), (N, 1000).

    Pass `net` (from `opencv_net`) to reuse a loaded net.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be NCHW, got shape {images.shape}")
    if net is None:
        net = opencv_net(prototxt_path, caffemodel_path, input_hw=images.shape[2:])
    logits_name, probs_name = _output_names(prototxt_path)
    net.setInput(images)
    logits, probs = net.forward([logits_name, probs_name])
    n = images.shape[0]
    return (np.asarray(logits, np.float32).reshape(n, -1),
            np.asarray(probs, np.float32).reshape(n, -1))


def opencv_outputs(prototxt_path, caffemodel_path, images, names):
    """Outputs of the layers `names` (OpenCV names a layer's output by the layer's name).

    The net is cut after the last of them, so this works at any input size. For in-place
    layers (BN, Scale, ReLU on one blob) ask for the last layer of the chain to get the blob's
    final value, e.g. "conv1/relu_7x7_s2" rather than "conv1/7x7_s2".
    """
    names = [names] if isinstance(names, str) else list(names)
    order = [_one(l, "name") for l in prototxt_layers(parse_prototxt(prototxt_path))]
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ValueError(f"{prototxt_path}: no layers named {unknown}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    net = opencv_net(prototxt_path, caffemodel_path, input_hw=images.shape[2:],
                     until=max(names, key=order.index))
    net.setInput(images)
    return [np.asarray(out, np.float32) for out in net.forward(names)]


def main(argv=None):
    """Print logits ranges and OpenCV timings for random models of the official prototxts."""
    names = (argv if argv is not None else sys.argv[1:]) or sorted(
        f[:-9] for f in os.listdir(MODELS_DIR) if f.endswith(".prototxt"))
    rng = np.random.default_rng(1)
    images = rng.normal(0, 50, (2, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            proto = os.path.join(MODELS_DIR, name + ".prototxt")
            model = os.path.join(tmp, name + ".caffemodel")
            t0 = time.perf_counter()
            random_caffemodel(proto, model)
            t1 = time.perf_counter()
            read_caffemodel(model)
            t2 = time.perf_counter()
            net = opencv_net(proto, model, input_hw=(224, 224))
            t3 = time.perf_counter()
            opencv_forward(proto, model, images, net=net)  # warm-up
            t4 = time.perf_counter()
            logits, probs = opencv_forward(proto, model, images, net=net)
            t5 = time.perf_counter()
            fused = opencv_net(proto, model, input_hw=(224, 224), fusion=True)
            logits_f, _ = opencv_forward(proto, model, images, net=fused)
            print(f"{name}: {os.path.getsize(model) / 1e6:.0f} MB, generate {t1 - t0:.1f}s, "
                  f"read {t2 - t1:.2f}s, cv2 load {t3 - t2:.1f}s, first forward {t4 - t3:.2f}s, "
                  f"forward(2) {t5 - t4:.2f}s | logits [{logits.min():.2f}, {logits.max():.2f}] "
                  f"std {logits.std():.2f}, std across images {logits.std(0).mean():.3f}, "
                  f"max prob {probs.max():.3f}, fused vs unfused max |diff| "
                  f"{np.abs(logits - logits_f).max():.2e}", flush=True)
            os.remove(model)


if __name__ == "__main__":
    main()
