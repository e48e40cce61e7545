"""Inference speed of what users run, beside the peers, measured in one run.

`run` times, for each batch size:
- `senet`: the default path of `senet predict` (`--engine auto` at the requested precision),
  then every other engine / precision / Keras backend asked for;
- the peers: timm's model of the same architecture in eager PyTorch (the faster memory
  format), and ONNX Runtime and OpenVINO on timm's own ONNX export (`torch.onnx.export`),
  compiled with the same OpenVINO settings as senet's engine.
Ratios are against OpenVINO on timm's export at the same precision and batch: the machine is
shared and noisy, so only numbers from the same run are compared.

timm and its export run in a child process (torchvision crashes when imported after
TensorFlow, and separate processes keep the runtimes' thread pools apart); so does Keras on a
backend other than the one this process imported.

FLOPs convention: `flops(model)` = 2 x the multiply-adds of the Conv2D (with groups) and Dense
layers, per image; BatchNorm, activations, pooling and the SE products are left out. Papers
often quote multiply-adds as "FLOPs": SE-ResNet-50's "3.87 GFLOPs" is `macs()`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from senet.errors import ArgumentError
from senet.variants import VARIANTS

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "bfloat16", "int8")
KERAS_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
FLOPS_CONVENTION = "GFLOPs = 2 x multiply-adds of Conv2D and Dense layers / 1e9, per image"
# timm's implementations of the same architectures (no SE-BN-Inception there).
TIMM_PEERS = {v.name: v.timm for v in VARIANTS.values() if v.timm}
PEERS = ("timm", "onnxruntime", "openvino")


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


def model_flops(name, size) -> int:
    """FLOPs per image of architecture `name` at `size` px (counted on a built model)."""
    from senet.blocks import weights_to_come
    from senet.models import create_model

    with weights_to_come():  # only its shapes are used
        return flops(create_model(name, input_shape=image_shape(size)))


# --------------------------------------------------------------------------- timing


def _time(step, batch_size, warmup, iters):
    """Images/s and latency of `step()` (one batch) after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    return _summary(_times(step, iters), batch_size)


def _times(step, iters):
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _summary(times, batch_size):
    median = statistics.median(times)
    return {"images_per_s": batch_size / median, "latency_ms_median": 1000 * median,
            "latency_ms_p95": 1000 * float(np.percentile(times, 95))}


def _noise(batch, size, layout="nhwc", seed=0):
    shape = (batch, size, size, 3) if layout == "nhwc" else (batch, 3, size, size)
    return np.random.default_rng(seed).uniform(-100, 100, shape).astype(np.float32)


@contextlib.contextmanager
def _noise_images(n, size):
    """A folder of `n` random images: int8 calibration for a speed measurement only."""
    from PIL import Image

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="senet-bench-") as d:
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                os.path.join(d, f"{i:03d}.png"))
        yield d


def trained_like(model, seed=0):
    """Give the BatchNorms of a random net (Keras or PyTorch) statistics, scale and offset
    drawn like a trained net's, in place; returns the model.

    A freshly built net's BatchNorms are the identity (scale 1, offset 0, mean 0, variance
    1): folded into the convs that makes zero biases, which graph optimizers drop, and with
    them fusions a trained net gets (TensorFlow's conv-bias-ReLU in bfloat16: the fold of
    `senet.engines._tf_forward` gains 1.31x instead of 1.71x on SE-ResNet-50 at 16 images,
    `python benchmarks/tf_forward.py --model se_resnet50 --batch-size 16 --precision bfloat16
    --rounds 4 [--untrained]`). The peers get the same, so that every side runs the graph
    users run.
    """
    rng = np.random.default_rng(seed)
    ranges = ((0.5, 1.5), (-0.2, 0.2), (-0.2, 0.2), (0.5, 1.5))  # scale, offset, mean, var
    if hasattr(model, "modules"):  # PyTorch
        import torch

        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                    for t, (low, high) in zip((m.weight, m.bias, m.running_mean,
                                               m.running_var), ranges):
                        t.copy_(torch.from_numpy(rng.uniform(low, high, t.shape)
                                                 .astype(np.float32)))
        return model
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.center and layer.scale:
            for v, (low, high) in zip((layer.gamma, layer.beta, layer.moving_mean,
                                       layer.moving_variance), ranges):
                v.assign(rng.uniform(low, high, v.shape).astype(np.float32))
    return model


@functools.lru_cache(maxsize=1)
def _random_model(name, size, *keras_settings):
    """The net `senet_step` times: random weights from a fixed seed (Keras' global one, set
    here; the same weights in every process), `trained_like` BatchNorms. Built once for all
    the steps of a run (`keras_settings`: what makes Keras build another net); an engine's
    artifact is cached by the weights' checksum, so the same weights also mean one build."""
    import keras

    from senet.models import create_model

    keras.utils.set_random_seed(0)
    return trained_like(create_model(name, weights=None, input_shape=image_shape(size)))


def senet_step(name, engine="auto", precision="float32", batch_size=16, size=224):
    """`senet.inference` (what `senet predict --engine ENGINE` runs) on random weights
    (`_random_model`) as a one-batch step.

    int8 is calibrated on random images: its speed is real, its accuracy meaningless here.
    """
    import keras

    from senet import engines

    engine = engines.choose_engine(engine, precision)
    model = _random_model(name, size, keras.backend.backend(), keras.config.dtype_policy().name,
                          keras.config.image_data_format())
    with contextlib.ExitStack() as stack:
        calibration = stack.enter_context(_noise_images(32, size)) if precision == "int8" else None
        predictor = engines.inference(model, engine=engine, precision=precision,
                                      batch_size=batch_size, size=size, calibration=calibration,
                                      min_agreement=0.0, progress=False)
    x = _noise(batch_size, size)
    return lambda: predictor(x)


def senet_run(name, engine="auto", precision="float32", batch_size=16, size=224, warmup=3,
              iters=10):
    """Time `senet_step`."""
    from senet import engines

    engine = engines.choose_engine(engine, precision)
    step = senet_step(name, engine, precision, batch_size, size)
    out = {"engine": engine, "precision": precision}
    if engine == "keras":
        import keras

        out["backend"] = keras.backend.backend()
    return {**out, **_time(step, batch_size, warmup, iters)}


def timm_run(name, batch_size=16, size=224, warmup=3, iters=10, precision="float32",
             onnx_path=None):
    """Time timm's model of `name` (`timm_step`). With `onnx_path`, timm's own ONNX export
    (logits, fixed batch) is written there too. Run it in a child process (see the module
    docstring)."""
    import timm
    import torch

    model = trained_like(timm.create_model(TIMM_PEERS[name], pretrained=False).eval())
    if onnx_path and not os.path.exists(onnx_path):
        from senet._io import atomic_path

        with atomic_path(onnx_path, suffix=".onnx") as tmp, torch.inference_mode():
            torch.onnx.export(model, torch.randn(batch_size, 3, size, size), tmp,
                              input_names=["input"], opset_version=17, dynamo=False)
    _, best, by_format = timm_step(model, batch_size, size, precision, warmup, iters)
    return {"library": f"timm {timm.__version__}, torch {torch.__version__}",
            "model": TIMM_PEERS[name], "memory_format": best, **by_format[best],
            "images_per_s_by_memory_format": {f: r["images_per_s"] for f, r in by_format.items()}}


def timm_step(model, batch_size=16, size=224, precision="float32", warmup=3, iters=10):
    """A timm model as a one-batch step: eager PyTorch under `torch.inference_mode()`,
    bfloat16 under CPU autocast, in the faster of its two memory formats (channels_last
    usually wins with oneDNN on CPU, not always). Returns the step, that format's name and
    each format's `_time`; the model is left in the faster format.

    The formats are timed on two copies of the model in turn, 3 rounds, the order reversed
    each round: timed once each, one after the other, a burst of other work on the shared
    machine picked the slower one (SE-ResNet-50 at 16 images in float32: 11 against 14
    images/s), and the peer measured slow.
    """
    import copy

    import torch

    x = torch.randn(batch_size, 3, size, size)

    def step_in(net, fmt):
        xf = x.contiguous(memory_format=getattr(torch, fmt))

        def step():
            autocast = (contextlib.nullcontext() if precision == "float32"
                        else torch.autocast("cpu", dtype=getattr(torch, precision)))
            with torch.inference_mode(), autocast:
                net(xf)
        return step

    formats = ("contiguous_format", "channels_last")
    nets = {formats[0]: model.to(memory_format=torch.contiguous_format),
            formats[1]: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    steps = {fmt: step_in(net, fmt) for fmt, net in nets.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    rounds = min(3, iters)
    by_format = {fmt: _summary(sum(per_round, []), batch_size) for fmt, per_round in
                 _alternated_times(steps, rounds, 0, iters // rounds).items()}
    best = max(by_format, key=lambda f: by_format[f]["images_per_s"])
    del nets, steps
    model.to(memory_format=getattr(torch, best))
    return step_in(model, best), best, by_format


def alternate(steps, batch_size, rounds, warmup=0, iters=1):
    """Images/s of each of `steps` (name -> one-batch callable) in each of `rounds` rounds,
    the steps timed in turn and the order reversed every other round. A burst of other work
    on the shared machine then falls on both sides of a ratio; senet's speed ratios are the
    median of the per-round ratios (`ratio`)."""
    return {k: [batch_size / statistics.median(t) for t in per_round]
            for k, per_round in _alternated_times(steps, rounds, warmup, iters).items()}


def _alternated_times(steps, rounds, warmup, iters):
    """`alternate`'s loop: each step's call times, a list per round (`warmup` untimed calls
    before each step's turn)."""
    out = {k: [] for k in steps}
    for i in range(rounds):
        for k in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            for _ in range(warmup):
                steps[k]()
            out[k].append(_times(steps[k], iters))
    return out


def ratio(faster, slower):
    """'1.05x (0.98-1.10)': the median and range of the per-round ratios of two lists of
    images/s from `alternate`."""
    r = [a / b for a, b in zip(faster, slower)]
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def timm_peer_step(name, batch_size=16, size=224, precision="float32"):
    """timm's model of `name` as a one-batch step (`timm_step`, its memory format chosen by
    a short alternated timing of both)."""
    import timm

    model = trained_like(timm.create_model(TIMM_PEERS[name], pretrained=False).eval())
    return timm_step(model, batch_size, size, precision, warmup=1, iters=3)[0]


class Worker:
    """A one-batch step living in a child process of its own, to be timed by `alternate`.

    Two runtimes in one process change each other's speed (TensorFlow in bfloat16 ran 0.93x
    as fast with torch imported first, timm 1.05x with TensorFlow imported; the README), so
    a ratio between them measured there need not be the one a user sees, who runs one. A worker builds `senet.bench.<builder>(**kwargs)` (a callable
    step) in a fresh Python and runs it once per call; the parent times the round trip (a pipe
    message, microseconds against a step's milliseconds).
    """

    def __init__(self, builder, kwargs, backend=None, env=None):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "KERAS_BACKEND": backend or _current_backend(),
               "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               **(env or {})}  # env: more variables for the child (read when it starts)
        self._log = tempfile.TemporaryFile("w+")  # the child's stderr, for its error message
        code = "import sys; from senet import bench; bench._serve(sys.argv[1], sys.argv[2])"
        self._proc = subprocess.Popen([sys.executable, "-c", code, builder, json.dumps(kwargs)],
                                      env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, text=True, bufsize=1)
        self._what = f"{builder} {kwargs.get('name', '')}".strip()
        self._reply()

    def __call__(self):
        self._proc.stdin.write("step\n")
        self._proc.stdin.flush()
        self._reply()

    def _reply(self):
        if self._proc.stdout.readline().strip() != "ok":
            self._proc.wait()
            self._log.seek(0)
            lines = [line for line in self._log.read().splitlines() if line.strip()]
            self._log.close()
            raise ChildError(f"{self._what} failed in its worker (exit {self._proc.returncode}): "
                             f"{lines[-1] if lines else 'no message'}")

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(builder, kwargs):
    """A `Worker`'s child: build the step, answer "ok" when built and after each step."""
    reply, sys.stdout = sys.stdout, sys.stderr  # a library's prints must not reach the pipe
    step = globals()[builder](**json.loads(kwargs))
    reply.write("ok\n")
    reply.flush()
    for _ in sys.stdin:
        step()
        reply.write("ok\n")
        reply.flush()


def onnx_peer_step(name, engine, precision="float32", batch_size=16, size=224):
    """timm's own ONNX export of `name` (made first, in a child, when missing) on ONNX
    Runtime or OpenVINO (compiled as senet's engine is) as a one-batch step."""
    path = _timm_onnx_path(name, size, batch_size)
    if not os.path.exists(path):
        _in_child("timm_run", {"name": name, "batch_size": batch_size, "size": size, "warmup": 0,
                               "iters": 1, "onnx_path": path}, "torch")
    x = _noise(batch_size, size, layout="nchw")
    if engine == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: x})
    import openvino as ov

    from senet.engines import openvino_config

    compiled = ov.Core().compile_model(path, "CPU", openvino_config(precision))
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


# --------------------------------------------------------------------------- everything


def run(name, *, batch_sizes=(16,), size=224, precision="float32", engines=("auto",),
        precisions=None, backends=(), peers=PEERS, warmup=3, iters=10):
    """Benchmark `name`: senet's default path first, then `engines` x `precisions`, Keras on
    `backends`, and the `peers`, at each batch size. Returns a JSON-ready dict whose "senet"
    entry is the default path at the first batch size."""
    from senet import engines as engine_module
    from senet.variants import get_variant

    name = get_variant(name).name
    for label, value, least in (("iters", iters, 1), ("warmup", warmup, 0), ("size", size, 32)):
        if value < least:
            raise ArgumentError(f"{label} must be at least {least} (got {value}).")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ArgumentError(f"batch sizes must be at least 1 (got {list(batch_sizes)}).")
    precisions = tuple(precisions or (precision,))
    for p in (precision, *precisions):
        if p not in PRECISIONS:
            raise ArgumentError(f"Unknown precision {p!r}; choose {', '.join(PRECISIONS)}.")
    for b in backends:
        if b not in BACKENDS:
            raise ArgumentError(f"Unknown backend {b!r}; choose {', '.join(BACKENDS)}.")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ArgumentError(f"Unknown peer {unknown[0]!r}; choose {', '.join(PEERS)}.")
    default_engine = engine_module.choose_engine("auto", precision)
    jobs = [("senet", default_engine, precision, None)]  # the default path comes first
    skipped = []  # engine x precision pairs that do not exist (ONNX Runtime bfloat16, ...)
    for e in engines:
        for p in precisions:
            try:
                job = ("senet", engine_module.choose_engine(e, p), p, None)
            except ArgumentError as err:
                skipped.append(f"{e} {p}: {err}")
                continue
            if job not in jobs:
                jobs.append(job)
    current = _current_backend()
    for b in backends:
        for p in precisions:
            if p != "int8" and ("senet", "keras", p, None if b == current else b) not in jobs:
                jobs.append(("senet", "keras", p, None if b == current else b))
    timm_ok = name in TIMM_PEERS and _installed("timm")
    results = []
    for batch in batch_sizes:
        kw = {"batch_size": batch, "size": size, "warmup": warmup, "iters": iters}
        for _, engine, p, backend in jobs:
            label = f"senet {engine}" + (f" ({backend or current})" if engine == "keras" else "")
            row = {"label": f"{label} {p}", "kind": "senet", "engine": engine, "precision": p,
                   "batch_size": batch}
            try:
                args = {"name": name, "engine": engine, "precision": p, **kw}
                row.update(_in_child("senet_run", args, backend) if backend else senet_run(**args))
            except (ChildError, ArgumentError, ImportError) as err:
                row["error"] = " ".join(str(err).split())
            results.append(row)
        if not timm_ok:
            continue
        onnx_path = _timm_onnx_path(name, size, batch)
        for p in precisions:
            if p == "int8":
                continue
            if "timm" in peers or not os.path.exists(onnx_path):
                row = {"label": f"timm eager {p}", "kind": "peer", "engine": "timm",
                       "precision": p, "batch_size": batch}
                try:
                    row.update(_in_child("timm_run", {"name": name, "precision": p,
                                                      "onnx_path": onnx_path, **kw}, "torch"))
                except ChildError as err:
                    row["error"] = str(err)
                if "timm" in peers:
                    results.append(row)
            for engine in ("onnxruntime", "openvino"):
                if engine not in peers or not engine_module.available(engine) or \
                        (engine == "onnxruntime" and p != "float32") or not os.path.exists(onnx_path):
                    continue
                row = {"label": f"{engine} on timm's ONNX {p}", "kind": "peer", "engine": engine,
                       "precision": p, "batch_size": batch}
                row.update(_time(onnx_peer_step(name, engine, p, batch, size), batch, warmup,
                                 iters))
                results.append(row)
    n_flops = model_flops(name, size)
    for row in results:
        if "images_per_s" in row:
            row["gflops_per_s"] = n_flops * row["images_per_s"] / 1e9
            ref = next((r for r in results if r["engine"] == "openvino" and r["kind"] == "peer"
                        and r["precision"] == row["precision"] and r["batch_size"] ==
                        row["batch_size"] and "images_per_s" in r), None)
            if ref:
                row["vs_openvino_on_timm"] = row["images_per_s"] / ref["images_per_s"]
    return {"model": name, "size": size, "batch_sizes": list(batch_sizes), "warmup": warmup,
            "iters": iters, "precision": precision, "flops_per_image": n_flops,
            "gflops_per_image": n_flops / 1e9, "flops_convention": FLOPS_CONVENTION,
            "timm_model": TIMM_PEERS.get(name), "senet": results[0], "results": results,
            "skipped": skipped}


def _timm_onnx_path(name, size, batch):
    from senet.weights.hub import cached_path

    return str(cached_path(f"bench/{TIMM_PEERS[name]}-{size}px-b{batch}-bn.onnx"))


def _current_backend():
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


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


def plot(report, path):
    """images/s against batch size for each measured path, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from senet.errors import MissingDependencyError

        raise MissingDependencyError("--plot needs matplotlib: pip install matplotlib") from None
    from senet._io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = dict.fromkeys(r["label"] for r in report["results"])
    for label in labels:
        rows = [r for r in report["results"] if r["label"] == label and "images_per_s" in r]
        if rows:
            style = "-o" if rows[0]["kind"] == "senet" else "--s"
            ax.plot([r["batch_size"] for r in rows], [r["images_per_s"] for r in rows], style,
                    label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s")
    ax.set_title(f"{report['model']}, {report['size']} px")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
