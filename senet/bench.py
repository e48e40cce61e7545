"""Inference speed of a SENet model on a Keras backend, beside timm's PyTorch implementation.

`run` measures both and is what `senet benchmark` and `benchmarks/benchmark.py` print.
The Keras backend is fixed when Keras is first imported, so `run` sets KERAS_BACKEND if Keras
is not imported yet, and otherwise measures another backend in a child process. timm always
runs in a child process: torchvision (imported by timm) crashes when imported after TensorFlow,
and a separate process also keeps the two runtimes' thread pools apart.

FLOPs convention: `flops(model)` = 2 x the multiply-adds of the Conv2D (with groups) and
Dense layers, per image; BatchNorm, activations, pooling and the SE products are left out.
Papers often quote multiply-adds as "FLOPs": SE-ResNet-50's "3.87 GFLOPs" is `macs()`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from senet.errors import ArgumentError
from senet.variants import VARIANTS

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
FLOPS_CONVENTION = "GFLOPs = 2 x multiply-adds of Conv2D and Dense layers / 1e9, per image"
# timm's implementations of the same architectures (no SE-BN-Inception there).
TIMM_PEERS = {v.name: v.timm for v in VARIANTS.values() if v.timm}


class ChildError(RuntimeError):
    """A measurement in a child process failed; the message is its last line of stderr."""


def image_shape(size):
    """(size, size, 3), or (3, size, size) when Keras builds channels_first."""
    import keras

    return (3, size, size) if keras.config.image_data_format() == "channels_first" else (size, size, 3)


# --------------------------------------------------------------------------- FLOPs


def macs(model) -> int:
    """Multiply-adds per image of the model's Conv2D and Dense layers (nested models included).

    Conv2D: output elements x kernel height x kernel width x input channels per group;
    Dense: output elements x input features. Needs a model built for a fixed image size.
    """
    import keras

    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, in_per_group, _ = layer.kernel.shape  # Keras' layout for either data format
            total += _per_image(layer) * kh * kw * in_per_group
        elif isinstance(layer, keras.layers.Dense):
            total += _per_image(layer) * layer.kernel.shape[0]
    return total


def flops(model) -> int:
    """FLOPs per image: 2 x `macs(model)` (a multiply and an add)."""
    return 2 * macs(model)


def _leaf_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _per_image(layer):
    """Elements of one image's output of `layer`."""
    shape = layer.output.shape[1:]
    if any(d is None for d in shape):
        raise ArgumentError(f"Cannot count FLOPs: layer {layer.name!r} has output shape {shape}; "
                         "build the model with a fixed input_shape.")
    return math.prod(shape)


# --------------------------------------------------------------------------- timing


def _time(step, batch_size, warmup, iters):
    """Images/s and latency of `step()` (one batch) after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"images_per_s": batch_size / median, "latency_ms_median": 1000 * median,
            "latency_ms_p95": 1000 * float(np.percentile(times, 95))}


def keras_run(name, batch_size=8, size=224, warmup=3, iters=10, precision="float32",
              include_top=True):
    """Time `predict_on_batch` on random inputs on the current Keras backend.

    `predict_on_batch` is the compiled inference path of each backend (tf.function, jax.jit,
    torch no-grad), so this measures what `model.predict` users get. `precision` other than
    float32 builds the model under Keras' mixed policy (float32 weights, compute in 16 bits).
    """
    import keras

    from senet.models import create_model

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        model = create_model(name, include_top=include_top, input_shape=image_shape(size))
    finally:
        keras.config.set_dtype_policy(old)
    x = np.random.default_rng(0).normal(size=(batch_size, *model.input_shape[1:])).astype("float32")
    return {"backend": keras.backend.backend(), "dtype_policy": model.dtype_policy.name,
            "flops_per_image": flops(model),
            "macs_per_image": macs(model),
            **_time(lambda: model.predict_on_batch(x), batch_size, warmup, iters)}


def timm_run(name, batch_size=8, size=224, warmup=3, iters=10, precision="float32"):
    """Time timm's model of `name`: eager PyTorch under `torch.inference_mode()`.

    Both memory formats are timed and the faster is reported (channels_last usually wins with
    oneDNN on CPU, not always); 16-bit precisions run under CPU autocast. Do not call this in
    a process that imported TensorFlow before timm (see the module docstring): `run` uses a
    child process.
    """
    import timm
    import torch

    model = timm.create_model(TIMM_PEERS[name], pretrained=False).eval()
    x = torch.randn(batch_size, 3, size, size)
    by_format = {}
    for fmt in ("contiguous_format", "channels_last"):
        memory_format = getattr(torch, fmt)
        model = model.to(memory_format=memory_format)
        xf = x.contiguous(memory_format=memory_format)
        autocast = (contextlib.nullcontext() if precision == "float32"
                    else torch.autocast("cpu", dtype=getattr(torch, precision)))
        with torch.inference_mode(), autocast:
            by_format[fmt] = _time(lambda: model(xf), batch_size, warmup, iters)  # noqa: B023
    best = max(by_format, key=lambda f: by_format[f]["images_per_s"])
    return {"library": f"timm {timm.__version__}, torch {torch.__version__}",
            "model": TIMM_PEERS[name], "memory_format": best, **by_format[best],
            "images_per_s_by_memory_format": {f: r["images_per_s"] for f, r in by_format.items()}}


# --------------------------------------------------------------------------- both, on any backend


def run(name, batch_size=8, size=224, warmup=3, iters=10, precision="float32", backend=None,
        peer=True):
    """Benchmark `name` on Keras (`backend`, default the current one) and, if installed, timm.

    Returns {"model", ..., "flops_per_image", "keras": {...}, "peer": {...} or None}; each
    entry has images/s, median and p95 latency in ms, and achieved GFLOP/s. Both peers run
    the same architecture, hence the same FLOP count.
    """
    from senet.variants import get_variant

    name = get_variant(name).name
    if precision not in PRECISIONS:
        raise ArgumentError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if backend is not None and backend not in BACKENDS:
        raise ArgumentError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    for label, value, least in (("batch_size", batch_size, 1), ("iters", iters, 1),
                                ("warmup", warmup, 0), ("size", size, 32)):
        if value < least:
            raise ArgumentError(f"{label} must be at least {least} (got {value}).")
    settings = {"batch_size": batch_size, "size": size, "warmup": warmup, "iters": iters,
                "precision": precision}
    args = {"name": name, **settings}
    if backend is None or _runs_here(backend):
        result = keras_run(**args)
    else:
        result = _in_child("keras_run", args, backend)
    n_flops, n_macs = result.pop("flops_per_image"), result.pop("macs_per_image")
    report = {"model": name, **settings, "flops_per_image": n_flops, "macs_per_image": n_macs,
              "gflops_per_image": n_flops / 1e9, "flops_convention": FLOPS_CONVENTION,
              "keras": result, "peer": None}
    if peer and name in TIMM_PEERS and _timm_installed():
        try:
            report["peer"] = _in_child("timm_run", args, "torch")
        except ChildError as err:  # the Keras numbers still stand
            report["peer"] = {"model": TIMM_PEERS[name], "error": str(err)}
    for entry in (report["keras"], report["peer"]):
        if entry and "images_per_s" in entry:
            entry["gflops_per_s"] = n_flops * entry["images_per_s"] / 1e9
    return report


def _runs_here(backend):
    """Whether Keras in this process runs on `backend` (set now if Keras is not imported yet)."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend() == backend
    os.environ["KERAS_BACKEND"] = backend
    return True


def _timm_installed():
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def _in_child(function, kwargs, backend):
    """Call `senet.bench.<function>(**kwargs)` in a fresh Python with KERAS_BACKEND=`backend`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    code = ("import json, sys; from senet import bench; "
            "print(json.dumps(getattr(bench, sys.argv[1])(**json.loads(sys.argv[2]))))")
    proc = subprocess.run([sys.executable, "-c", code, function, json.dumps(kwargs)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise ChildError(f"{function} on {backend} failed (exit {proc.returncode}): "
                         f"{lines[-1] if lines else 'no message'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
