"""Inference on the fastest engine the machine has: Keras (its backend), OpenVINO or ONNX Runtime.

    predictor = senet.inference("seresnext50_32x4d", engine="auto", precision="bfloat16")
    probs = predictor(senet.preprocess_input(images))      # (n, classes)
    predictor.labels                                       # (id, name) of each output

OpenVINO and ONNX Runtime run an artifact exported from the Keras model (OpenVINO's IR
converted from a TensorFlow SavedModel; ONNX through tf2onnx), built once and cached under
`$SENET_HOME/engines/`, keyed by the weights' checksum, engine, precision, input size and
library versions; a second run loads it without building a Keras model at all. The artifact
takes any batch size: OpenVINO fixes the predictor's batch when it compiles (a static shape,
as if converted at that batch; compiled programs are cached per batch), so a new
--batch-size costs a compile, not a build. Every artifact is checked against the Keras model
when it is built, by the engine that will run it: float32 within 1e-4, bfloat16 and int8 by
top-1 agreement with float32. The build runs in a child process with the
TensorFlow backend (the exporters trace TensorFlow graphs; a child also returns the
exporters' memory when done), so it works from any backend.

int8 is post-training quantization by NNCF, calibrated on the user's images; a held-out part
of them measures top-1 agreement with float32, and a model below `min_agreement` is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from senet.errors import ArgumentError, ExportError, MissingDependencyError, SenetError

ENGINES = ("keras", "openvino", "onnxruntime")
PRECISIONS = ("float32", "bfloat16", "int8")
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
_EXTRAS = {"openvino": "openvino", "onnxruntime": "onnx"}
BUILD_FORMAT = 2  # bump when the artifacts' layout changes (invalidates the cache)


def available(engine: str) -> bool:
    """Whether `engine` can run here (its package is installed)."""
    return engine == "keras" or importlib.util.find_spec(_PACKAGES[engine]) is not None


def cpu_has_bfloat16() -> bool:
    """Native bfloat16 arithmetic (AVX-512 BF16 or AMX), which makes bfloat16 inference pay."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_engine(engine: str, precision: str) -> str:
    """The engine to use: `engine`, or for "auto" the fastest installed for `precision`."""
    if engine not in (*ENGINES, "auto"):
        raise ArgumentError(f"Unknown engine {engine!r}; choose auto, {', '.join(ENGINES)}.")
    if precision not in PRECISIONS:
        raise ArgumentError(f"Unknown precision {precision!r}; choose {', '.join(PRECISIONS)}.")
    if engine == "auto":
        order = ["openvino"] if precision == "int8" else (
            ["openvino", "keras"] if precision == "bfloat16" else ["openvino", "onnxruntime", "keras"])
        engine = next((e for e in order if available(e)), order[0])
    if not available(engine):
        raise MissingDependencyError(
            f"the {engine} engine needs the {_PACKAGES[engine]} package: pip install "
            f"'senet[{_EXTRAS[engine]}]' (or choose --engine keras)")
    if precision == "int8" and engine != "openvino":
        raise ArgumentError("int8 runs on the openvino engine (NNCF quantization); "
                            "use --engine openvino.")
    if precision == "bfloat16" and engine == "onnxruntime":
        raise ArgumentError("ONNX Runtime has no bfloat16 CPU kernels; use --engine openvino "
                            "or keras for bfloat16.")
    return engine


@dataclasses.dataclass
class Predictor:
    """A compiled classifier: `predictor(x)` maps preprocessed images (n, size, size, 3),
    float32 (senet.preprocess_input), to class probabilities (n, classes)."""

    engine: str
    precision: str
    size: int
    batch_size: int | None  # the batch every call runs at (split and padded); None: any
    meta: dict  # the weights' metadata (classes, preprocessing, provenance)
    labels: tuple
    report: dict  # how the artifact was checked when built (difference, agreement)
    run: object = dataclasses.field(repr=False)

    def __call__(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.batch_size is None or len(x) == self.batch_size:
            return self.run(x)
        out = []
        for i in range(0, len(x), self.batch_size):  # split, and pad the last batch
            part = x[i:i + self.batch_size]
            n = len(part)
            if n < self.batch_size:
                part = np.concatenate([part, np.zeros((self.batch_size - n, *x.shape[1:]),
                                                      np.float32)])
            out.append(self.run(part)[:n])
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


# --------------------------------------------------------------------------- entry point


def inference(model, weights="imagenet", *, engine="auto", precision="float32",
              batch_size=None, size=None, calibration=None, min_agreement=0.98,
              progress=True) -> Predictor:
    """A `Predictor` for `model` on `engine` at `precision`.

    model: an architecture name or 'arch.tag', or a Keras model built by senet (then
    `weights` is ignored: the model's own weights are used). engine: "auto" (OpenVINO if
    installed, else ONNX Runtime, else Keras), "keras", "openvino" or "onnxruntime".
    precision: "float32", "bfloat16" (native on CPUs with AVX-512 BF16 / AMX), "int8"
    (needs `calibration`: image files or a folder of them, ideally a few hundred of the
    user's own). batch_size: the batch the engine is compiled for (inputs are split and the
    last part padded; None: any batch, compiled for whatever shape comes). size: the input
    size (default: the weights' evaluation size).
    """
    engine = choose_engine(engine, precision)
    if precision == "int8" and not calibration:
        raise ArgumentError("int8 needs calibration images (--calibration DIR): a few hundred "
                            "of the images the model will see.")
    if batch_size is not None and batch_size < 1:
        raise ArgumentError(f"batch_size must be at least 1 (got {batch_size}).")
    spec, keras_model = _spec(model, weights, size)
    from senet.imagenet import labels

    spec.update(engine=engine, precision=precision, batch=batch_size)
    table = labels(spec["meta"], spec["meta"].get("classes") or None)
    if engine == "keras":
        run, report = _keras_runner(spec, keras_model, precision)
        return Predictor(engine, precision, spec["size"], batch_size, spec["meta"], table,
                         report, run)
    directory, report = _artifact(spec, calibration, min_agreement, keras_model, progress)
    runner = _openvino_runner if engine == "openvino" else _onnxruntime_runner
    return Predictor(engine, precision, spec["size"], batch_size, spec["meta"], table, report,
                     runner(directory, precision, batch_size))


def _spec(model, weights, size):
    """What to build: arch, weights (a name or file), size, metadata, and the weights' id."""
    from senet import catalogue
    from senet.variants import get_variant
    from senet.weights import loader

    if not isinstance(model, str):  # a built Keras model: its own weights
        meta = dict(getattr(model, "senet_weights", None) or {})
        arch = get_variant(meta.get("model") or model.name).name
        input_size = model.input_shape[1]
        return {"arch": arch, "weights": None, "size": size or input_size, "meta": meta,
                "weights_id": _arrays_id(model)}, model
    arch, tag = catalogue.split(model)
    variant = get_variant(arch)
    if tag is not None and weights == "imagenet":
        weights = catalogue.find(model).key
    resolved = loader.resolve(variant, weights) if weights is not None else None
    meta = dict(resolved.meta) if resolved else {"classes": 1000, "class_set": "imagenet-1k"}
    default = (meta.get("preprocessing") or {}).get("size", 224)
    return {"arch": variant.name, "weights": weights if resolved is None or resolved.kind ==
            "catalogue" else resolved.path, "size": size or default, "meta": meta,
            "weights_id": _weights_id(resolved)}, None


def _weights_id(resolved) -> str:
    """A content id of the weights, cheap to compute (no model is built)."""
    if resolved is None:
        return "random"
    if resolved.kind == "catalogue":
        e = resolved.entry
        return f"{e.key}@{e.sha256 or e.url_sha256 or 'unpinned'}"
    if resolved.kind == "senet":
        from senet.weights import native

        doc = native.read_header(resolved.path)
        if doc is not None:
            return "senet:" + doc["body_sha256"]
    from senet.weights.hub import sha256_file

    return "file:" + sha256_file(resolved.path)


def _arrays_id(model) -> str:
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return "arrays:" + h.hexdigest()


# --------------------------------------------------------------------------- Keras


def _keras_runner(spec, model, precision):
    import keras

    from senet.bench import image_shape
    from senet.blocks import weights_to_come
    from senet.models import create_model

    if model is None or precision != "float32" or model.input_shape[1] != spec["size"]:
        policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[precision]
        old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            if model is not None:  # same weights, another size or precision
                with weights_to_come():
                    fresh = create_model(spec["arch"], input_shape=image_shape(spec["size"]),
                                         classes=model.output_shape[-1])
                fresh.set_weights(model.get_weights())
                model = fresh
            else:
                model = create_model(spec["arch"], weights=spec["weights"],
                                     input_shape=image_shape(spec["size"]))
        finally:
            keras.config.set_dtype_policy(old)
    channels_first = keras.config.image_data_format() == "channels_first"
    forward = {"torch": _torch_forward, "tensorflow": _tf_forward, "jax": _jax_forward}.get(
        keras.backend.backend(), lambda m: None)(model)

    def run(x):
        if channels_first:
            x = x.transpose(0, 3, 1, 2)
        y = forward(x) if forward else model.predict_on_batch(x)
        return np.asarray(keras.ops.convert_to_numpy(y), np.float32)

    return run, {"engine": "keras", "backend": keras.backend.backend()}


def _tf_forward(model, fold=True):
    """Inference on TensorFlow as one graph with the weights in it as constants, or None.

    `predict_on_batch` runs the model as a function of its variables; with the weights frozen
    into the graph no per-call data handling runs around it, and TensorFlow's graph optimizer
    folds a float32 BatchNorm's arithmetic into constants next to its convolution (faster at
    batch 1 and 16 alike; the same outputs to float32 rounding). Under a mixed bfloat16 policy
    it cannot: Keras computes each BatchNorm in float32, so casts stand between it and the
    conv (SE-ResNet-50's optimised graph kept 141 casts and 53 multiplies), and the graph is
    traced with each BatchNorm folded into its conv here instead (`_bn_fold`, `fold=False`
    not; `python benchmarks/tf_forward.py` measures both). The weights are copied in: the
    callable is for a model whose weights no longer change (inference). None, and Keras' own
    path, for a model of several inputs or one the conversion does not take.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2

    if len(model.inputs) != 1:
        return None
    calls = {}
    if fold:
        try:
            sole = _sole_reader(model)
            folds = {conv: _bn_fold(conv, sole) for conv in model.layers}
        except AttributeError:  # Keras' graph internals (nodes, histories) moved: no folds
            folds = {}
        for conv, (bn, kernel, bias) in ((k, v) for k, v in folds.items() if v):
            calls[conv] = functools.partial(_tf_conv, tf, conv, kernel, bias)
            calls[bn] = _passed_on

    def folded_call(x):  # Keras' graph walk (3.15 internals) with the folds in
        return model._run_through_graph(x, lambda op: calls.get(op) or (
            functools.partial(_inference_call, op) if getattr(op, "_call_has_training_arg",
                                                               False) else op))

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    frozen = None
    for call in ([folded_call] if calls else []) + [lambda x: model(x, training=False)]:
        try:
            frozen = convert_variables_to_constants_v2(
                tf.function(call).get_concrete_function(spec))
            break
        except Exception:  # noqa: BLE001 - an optimisation: the next form computes the same
            continue
    if frozen is None:  # Keras' own path
        return None

    def forward(x):
        y = frozen(tf.constant(x, tf.float32))
        return y[0] if isinstance(y, (list, tuple)) and len(y) == 1 else y

    forward.function = frozen  # the frozen graph, for tests and benchmarks
    return forward


def _tf_conv(tf, conv, kernel, bias, x, *args, **kwargs):
    """A conv with its BatchNorm folded in (`_bn_fold`), in the layer's compute dtype."""
    dtype = conv.compute_dtype
    y = conv.convolution_op(tf.cast(x, dtype), tf.constant(kernel, dtype))
    return tf.nn.bias_add(y, tf.constant(bias, dtype),
                          data_format="NHWC" if conv.data_format == "channels_last" else "NCHW")


UNITS_PER_PROGRAM = 8  # the longest run of residual units the JAX engine compiles as one


def _jax_forward(model, units=UNITS_PER_PROGRAM):
    """Inference on JAX as compiled programs called with the model's weights: for a float32
    net with a stage of more than `units` residual units, a few programs in a row, and for a
    mixed-precision net, one program fed its kernels already cast; None (Keras'
    `predict_on_batch`, one program) otherwise.

    Compiled as one program, a long stage runs slowly on XLA:CPU. A unit's output (ReLU of the
    sum) is read by the next unit twice, by its first conv and by its addition, and XLA fuses
    that cheap ReLU into both readers instead of storing it once; so no unit's output is ever
    stored, and the addition of unit k recomputes the whole residual sum of units 1..k-1 from
    their conv outputs (SENet-154's conv4: one fusion reads the outputs of 36 convs). The work
    grows with the square of the stage's length. An `optimization_barrier` at each unit's output
    does not stop it (ad hoc: the compiled program has none left, and the same fusions), so the
    cut is made between programs: one program every `units` units of a stage, the cut tensor
    stored between them. At 8 units a program, at batch 16 / 1: SENet-154 1.17x / 1.24-1.26x as
    fast, SE-ResNet-152 1.34-1.37x / 1.36-1.52x (two runs of `python
    benchmarks/jax_programs.py`). Nets whose stages have at most 8 units (SE-ResNet-50,
    SE-ResNeXt-50: 6) stay one program: cut every 4 units, they measured 0.91-1.07x, within the
    noise (`--units 4`). float32 only: in mixed bfloat16 XLA stores each sum (seen in the
    compiled program), and the cut measured 0.97-0.98x / 1.01-1.03x on SENet-154 (`--precision
    bfloat16`, two runs). See `_jax_weights` for the mixed-precision part.
    """
    cuts = _jax_cuts(model, units)
    if any(layer.compute_dtype != "float32" for layer in model.layers) and cuts is not None:
        cuts = []  # one program
    elif not cuts:
        return None
    return _jax_programs(model, cuts)


def _jax_cuts(model, units):
    """The outputs of every `units`-th residual unit of a stage that goes on after it (found by
    the layer names, `conv<stage>_<unit>_relu`), or None for a model of several inputs or
    outputs."""
    import re

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    ends = {}
    for layer in model.layers:
        m = re.fullmatch(r"conv(\d+)_(\d+)_relu", layer.name)
        if m:
            ends[int(m[1]), int(m[2])] = layer
    return [layer.output for (stage, unit), layer in sorted(ends.items())
            if unit % units == 0 and (stage, unit + 1) in ends]


def _jax_programs(model, cuts):
    """The model as one jitted program per piece between `cuts` (none: the whole model),
    chained, each called with the weights' current values (`_jax_weights`); None where the
    cuts do not cut this graph."""
    import jax
    import keras

    points = [model.inputs[0], *cuts, model.outputs[0]]
    try:
        parts = [keras.Model(a, b) for a, b in zip(points, points[1:])] if cuts else [model]
    except ValueError:  # not a cut of this graph after all
        return None

    def compiled(part):
        def call(trainable, other, x):
            return part.stateless_call(trainable, other, x, training=False)[0]
        return jax.jit(call), _jax_weights(part, part.trainable_variables), \
            _jax_weights(part, part.non_trainable_variables)

    programs = [compiled(part) for part in parts]

    def forward(x):
        for program, trainable, other in programs:
            x = program(trainable(), other(), x)
        return x

    forward.parts, forward.programs = parts, programs  # for benchmarks/jax_profile.py
    return forward


def _jax_weights(model, variables):
    """A function giving the variables' current values, for a program's call; those a mixed
    policy casts at each use (the kernels, not BatchNorm's statistics) come already cast.

    Keras casts a float32 kernel to the compute dtype inside the program, so every call
    converted all the weights again. With the cast done once, at batch 1 / 16: SE-ResNet-50
    1.36x / 1.03x as fast, SENet-154 1.20x / 1.11x (`python benchmarks/jax_programs.py
    --keras --precision bfloat16`, against Keras' `predict_on_batch`). Fed bfloat16, the
    program's float32 round trip (Keras' `StatelessScope` converts a value to its variable's
    dtype, the layer casts it back) is exact, and XLA removes it. A cast is kept while its
    variable keeps the same array (JAX arrays are immutable; assigning makes a new one), so
    a model trained after this is served its new weights."""
    import keras

    narrow = {id(v): layer.compute_dtype for layer in model.layers for v in layer.weights
              if layer.autocast and layer.compute_dtype in ("bfloat16", "float16")
              and v.dtype == "float32" and getattr(v, "_autocast", True)}  # as Keras decides
    cache = {}

    def value(v):
        if id(v) not in narrow:
            return v.value
        source, cast = cache.get(id(v), (None, None))
        if source is not v.value:
            source, cast = cache[id(v)] = (v.value, keras.ops.cast(v.value, narrow[id(v)]))
        return cast

    return lambda: [value(v) for v in variables]


def _torch_forward(model):
    """Inference on the PyTorch backend without Keras' per-layer `__call__`, or None.

    Eager PyTorch runs Keras' `Layer.__call__` (input conversion and checks, dtype policy,
    name scopes, call context) around every layer, each call, and at batch 1 that Python
    work weighs as much as the kernels. This runs the same functional graph as a flat list
    of steps (`_graph_steps`), each layer's `call` with `training=False`, except where a
    plain torch op does the same: each BatchNorm folded into the conv before it and the conv
    run on views (`_folded_convs`), the SE gates' pool and sigmoid (`_gate_ops`), and ReLU,
    Add and Multiply in place where the graph shows their first input has no other reader
    (`_in_place_ops`: a fresh activation of tens of MB costs page faults; an in-place op
    reuses the memory). The weights are read once, here: the callable is for a model whose
    weights no longer change (inference). A mixed_bfloat16 model (where `__call__` would
    cast each layer's inputs and weights) runs the same steps under torch's CPU autocast:
    convolutions and matrix products in bfloat16, outputs returned as float32. None (Keras'
    `predict_on_batch`) for other policies or where the graph is not there. It leans on
    Keras internals (3.15): without `_call_has_training_arg` layers get their default
    `training` (inference for BatchNorm and Dropout); without the nodes' attributes it falls
    back to Keras' own graph walk, without the torch ops.
    """
    import keras
    import torch

    dtypes = {layer.compute_dtype for layer in model.layers}
    if not hasattr(model, "_run_through_graph") or not dtypes <= {"float32", "bfloat16"}:
        return None
    bfloat16 = "bfloat16" in dtypes  # Keras' mixed_bfloat16 policy: torch's CPU autocast
    try:
        calls = {**_folded_convs(model, torch), **_gate_ops(model, torch),
                 **_in_place_ops(model, torch)}
    except AttributeError:  # Keras' graph internals (nodes, histories) moved
        calls = {}
    for layer in model.layers:  # the callable of every layer, made once, not per batch
        if layer not in calls and getattr(layer, "_call_has_training_arg", False):
            calls[layer] = functools.partial(_inference_call, layer.call)

    try:
        run = _graph_steps(model, calls)
    except (AttributeError, KeyError):  # Keras' graph internals moved
        run = None
    if run is None:
        def run(x):
            return model._run_through_graph(x, lambda op: calls.get(op) or op.call)

    def forward(x):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bfloat16):
            y = run(keras.ops.convert_to_tensor(x, "float32"))
        return keras.tree.map_structure(lambda t: t.float(), y) if bfloat16 else y

    return forward


def _graph_steps(model, calls):
    """The functional graph as a flat list of steps, or None where a node is more than a call
    on one tensor or a list of tensors. Keras' `_run_through_graph` rebuilds every node's
    arguments with tree maps at every call (several ms a batch on SE-ResNet-50, as much as
    the kernels of a dozen layers at batch 1); the steps index a list instead, and drop each
    tensor after its last reader (Keras' walk holds every activation to the end)."""
    import keras

    slots = {id(t): i for i, t in enumerate(model.inputs)}
    steps = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            args, kwargs = node.arguments.args, node.arguments.kwargs
            # mask=None is the default; the steps run every layer with training=False
            if any(not (k == "mask" and v is None or k == "training" and not v)
                   for k, v in kwargs.items()) or len(args) != 1 or len(node.outputs) != 1:
                return None
            arg = args[0]
            many = isinstance(arg, (list, tuple))
            tensors = list(arg) if many else [arg]
            if not all(isinstance(t, keras.KerasTensor) for t in tensors):
                return None
            ins = [slots[id(t)] for t in tensors]
            out = slots.setdefault(id(node.outputs[0]), len(slots))
            steps.append((calls.get(node.operation) or node.operation.call, ins, many, out))
    outputs = [slots[id(t)] for t in model.outputs]
    last = {}
    for i, (_, ins, _, _) in enumerate(steps):
        last.update((s, i) for s in ins)
    keep = set(outputs)
    drops = [[] for _ in steps]
    for s, i in last.items():
        if s not in keep:
            drops[i].append(s)
    structure = model._outputs_struct

    def run(x):
        values = [None] * len(slots)
        values[0] = x
        for (fn, ins, many, out), drop in zip(steps, drops):
            values[out] = fn([values[i] for i in ins]) if many else fn(values[ins[0]])
            for s in drop:
                values[s] = None
        return keras.tree.pack_sequence_as(structure, [values[s] for s in outputs])

    return run


def _inference_call(call, *args, **kwargs):
    return call(*args, **{**kwargs, "training": False})


def _sole_reader(model):
    """{id(tensor): the layer that alone reads it} over the model's graph (model inputs and
    outputs count as readers)."""
    import collections

    readers = collections.defaultdict(list)
    for t in [*model.inputs, *model.outputs]:
        readers[id(t)].append(None)
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                readers[id(t)].append(layer)
    return {k: v[0] for k, v in readers.items() if len(v) == 1 and v[0] is not None}


def _single_node(layer):
    nodes = layer._inbound_nodes
    return nodes[0] if len(nodes) == 1 and len(nodes[0].outputs) == 1 else None


def _plain_conv(layer) -> bool:
    """A senet conv called once, undilated, without activation, in float32 or bfloat16."""
    from senet import blocks

    return type(layer) in (blocks.Conv2D, blocks.GroupedConv2D) \
        and _single_node(layer) is not None and layer.dilation_rate == (1, 1) \
        and layer.activation.__name__ == "linear" \
        and layer.compute_dtype in ("float32", "bfloat16")


def _bn_fold(conv, sole):
    """(bn, kernel, bias) for a senet conv whose output only a BatchNorm reads, or None: the
    inference arithmetic y = (conv(x) - mean) * g + b, g = gamma / sqrt(var + eps), is
    conv(x) with the kernel times g (per output channel) plus the bias b - mean * g. One pass
    over the activation instead of two; under a mixed bfloat16 policy also no float32 round
    trip (Keras computes BatchNorm in float32). float32 numpy arrays, kernel in Keras' HWIO
    layout; shared by the TensorFlow and PyTorch forwards."""
    import keras

    from senet import blocks

    if not _plain_conv(conv):
        return None
    bn = sole.get(id(_single_node(conv).outputs[0]))
    axis = (-1, 3) if conv.data_format == "channels_last" else (1,)
    if type(bn) is not blocks.BatchNormalization or _single_node(bn) is None \
            or bn.axis not in axis or not (bn.center and bn.scale):
        return None
    value = keras.ops.convert_to_numpy
    g = value(bn.gamma) / np.sqrt(value(bn.moving_variance) + np.float32(bn.epsilon))
    bias = value(conv.bias) if conv.use_bias else np.float32(0)
    return bn, value(conv.kernel) * g, value(bn.beta) - (value(bn.moving_mean) - bias) * g


def _folded_convs(model, torch):
    """{layer: torch callable} for senet's convolutions, each with the BatchNorm that alone
    reads its output folded in (`_bn_fold`; the BatchNorm then passes its input on), and a
    symmetric ZeroPadding2D that alone feeds a 'valid' conv made the conv's padding (the pad
    layer passes its input on): one Python call instead of three."""
    sole = _sole_reader(model)
    out = {}
    for conv in model.layers:
        if not _plain_conv(conv) or conv.data_format != "channels_last":
            continue
        node = _single_node(conv)
        kh, kw = conv.kernel_size
        if conv.padding == "same" and (kh % 2 == 0 or kw % 2 == 0 or conv.strides != (1, 1)):
            continue  # asymmetric: Keras' own path
        pad = [kh // 2, kw // 2] if conv.padding == "same" else [0, 0]
        with torch.no_grad():
            fold = _bn_fold(conv, sole)
            if fold:
                bn, kernel, bias = fold
                kernel, bias = torch.from_numpy(kernel), torch.from_numpy(bias)
                out[bn] = _passed_on
            else:
                kernel = conv.kernel.value.detach()
                bias = conv.bias.value.detach() if conv.use_bias else None
            kernel = kernel.permute(3, 2, 0, 1)  # HWIO -> OIHW
            pad_layer = node.input_tensors[0]._keras_history.operation
            if conv.padding == "valid" and type(pad_layer).__name__ == "ZeroPadding2D" \
                    and sole.get(id(node.input_tensors[0])) is conv \
                    and _single_node(pad_layer) is not None:
                (top, bottom), (left, right) = pad_layer.padding
                if top == bottom and left == right and pad_layer.data_format == "channels_last":
                    pad = [top, left]
                    out[pad_layer] = _passed_on
            kernel = kernel.contiguous(memory_format=torch.channels_last)
            bias = None if bias is None else bias.contiguous()
        out[conv] = functools.partial(_torch_conv, torch, kernel, bias, conv.strides, pad,
                                      conv.groups)
    return out


def _gate_ops(model, torch):
    """{layer: torch callable} for the SE gates' squeeze (a global average pool) and sigmoid:
    the same ops without Keras' conversions around them (two calls in every unit)."""
    import keras

    out = {}
    for layer in model.layers:
        if type(layer) is keras.layers.GlobalAveragePooling2D \
                and layer.data_format == "channels_last":
            out[layer] = functools.partial(torch.mean, dim=(1, 2), keepdim=layer.keepdims)
        elif type(layer) is keras.layers.Activation \
                and layer.activation is keras.activations.sigmoid:
            out[layer] = torch.sigmoid
    return out


def _passed_on(x, *args, **kwargs):
    return x


def _torch_conv(torch, kernel, bias, strides, pad, groups, x, *args, **kwargs):
    """A conv on an NHWC tensor: as NCHW in channels_last memory (a view), oneDNN's layout.
    A 1x1 conv at batch 1, or of a 1x1 map (the SE gates), as the matrix product it is: faster
    there, slower than oneDNN's conv at batch 16 (`python benchmarks/pointwise_convs.py
    --backend torch`)."""
    if kernel.shape[2:] == (1, 1) and groups == 1 and (x.shape[0] == 1 or x.shape[1] == 1):
        if strides != (1, 1):
            x = x[:, ::strides[0], ::strides[1], :]
        n, h, w, c = x.shape  # 2-D: a strided 4-D input would make it a slow batched product
        return torch.nn.functional.linear(x.reshape(-1, c), kernel[:, :, 0, 0], bias) \
            .view(n, h, w, -1)
    y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), kernel, bias, strides, pad, 1, groups)
    return y.permute(0, 2, 3, 1)


def _in_place_ops(model, torch):
    """{layer: in-place call} for the ReLU / Add / Multiply layers that may overwrite their
    first input: read by that layer alone, not a model input or output, same shape as the
    result (no broadcast into it), and made by a layer whose output is its own memory (not a
    view or the unchanged input of a Reshape or Dropout, which another reader may share)."""
    import keras

    from senet import blocks

    owners = (blocks.Conv2D, blocks.BatchNormalization, keras.layers.ReLU, keras.layers.Add,
              keras.layers.Multiply)
    sole = _sole_reader(model)
    out = {}
    for layer in model.layers:
        if len(layer._inbound_nodes) != 1:
            continue
        node = layer._inbound_nodes[0]
        first = node.input_tensors[0] if node.input_tensors else None
        if first is None or sole.get(id(first)) is not layer or len(node.outputs) != 1 \
                or tuple(first.shape) != tuple(node.outputs[0].shape) \
                or not isinstance(first._keras_history.operation, owners):
            continue
        kind = type(layer)
        if kind is keras.layers.ReLU and layer.max_value is None and not layer.negative_slope \
                and not layer.threshold:
            out[layer] = torch.relu_
        elif kind is keras.layers.Add:
            out[layer] = lambda xs: functools.reduce(lambda a, b: a.add_(b), xs[1:], xs[0])
        elif kind is keras.layers.Multiply:
            out[layer] = lambda xs: functools.reduce(lambda a, b: a.mul_(b), xs[1:], xs[0])
    return out


# --------------------------------------------------------------------------- artifacts


def _versions(engine):
    import importlib.metadata as md

    names = ["tensorflow", _PACKAGES[engine]] + (
        ["nncf"] if engine == "openvino" else ["tf2onnx"])
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def _key(spec, calibration) -> str:
    from senet import __version__

    fields = {k: spec[k] for k in ("arch", "weights_id", "size", "engine", "precision")}
    fields.update(senet=__version__, build_format=BUILD_FORMAT, versions=_versions(spec["engine"]))
    if spec["precision"] == "int8":
        fields["calibration"] = _files_id(calibration)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def image_files(source) -> list[str]:
    """Image files from a folder (recursively, sorted) or a list of paths."""
    from senet.images import EXTENSIONS

    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if not os.path.isdir(source):
            raise ArgumentError(f"{source}: not a folder of calibration images.")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(source) for f in fs
                       if f.lower().endswith(EXTENSIONS) and not f.startswith("."))
    else:
        files = [os.fspath(p) for p in source]
    if not files:
        raise ArgumentError(f"{source}: no image files for calibration.")
    return files


def _files_id(calibration) -> str:
    h = hashlib.sha256()
    for path in image_files(calibration):
        st = os.stat(path)
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _artifact_dir(spec, calibration):
    from senet.weights.hub import cached_path

    key = _key(spec, calibration)
    return cached_path(f"engines/{spec['arch']}-{spec['engine']}-{spec['precision']}-"
                       f"{spec['size']}px-{key}"), key


def artifact_dir(model, weights="imagenet", *, engine, precision="float32", size=None,
                 calibration=None):
    """Where `inference(...)` with these arguments caches its artifact (built or not); the
    benchmarks read the compiled graph from there."""
    spec, _ = _spec(model, weights, size)
    spec.update(engine=engine, precision=precision)
    return _artifact_dir(spec, calibration)[0]


def is_built(model, weights="imagenet", *, engine, precision="float32", size=None,
             calibration=None) -> bool:
    """Whether `inference(...)` with these arguments would find its artifact in the cache
    (at any batch size)."""
    return engine == "keras" or (artifact_dir(model, weights, engine=engine, precision=precision,
                                              size=size, calibration=calibration)
                                 / "build.json").is_file()


def _artifact(spec, calibration, min_agreement, keras_model, progress):
    """(directory, report) of the cached artifact, built in a child process if missing."""
    from senet._io import make_readable
    from senet.weights.hub import file_lock

    directory, key = _artifact_dir(spec, calibration)
    report_path = directory / "build.json"
    if report_path.is_file():
        return directory, json.loads(report_path.read_text())
    with file_lock(directory.with_name(directory.name + ".lock"), "building an engine",
                   announce=progress):
        if report_path.is_file():  # another process built it while we waited
            return directory, json.loads(report_path.read_text())
        if progress:
            print(f"Building the {spec['engine']} {spec['precision']} engine for {spec['arch']} "
                  f"at {spec['size']} px (once; cached in {directory.parent}) ...",
                  file=sys.stderr, flush=True)
        tmp = tempfile.mkdtemp(prefix=f".{directory.name}.part-", dir=directory.parent)
        try:
            job = {**spec, "out": tmp, "min_agreement": min_agreement,
                   "calibration": image_files(calibration) if calibration else None}
            with _weights_file(keras_model, spec) as path:
                if path:
                    job["weights"] = path
                report = _run_child(job)
            report.update(key=key, versions=_versions(spec["engine"]))
            with open(os.path.join(tmp, "build.json"), "w") as f:
                json.dump(report, f, indent=1)
            make_readable(tmp)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return directory, report


@contextlib.contextmanager
def _weights_file(model, spec):
    """A temporary senet weights file of an in-memory model, for the child process."""
    if model is None:
        yield None
        return
    from senet.weights import native

    with tempfile.TemporaryDirectory(prefix="senet-engine-") as d:
        path = os.path.join(d, "model.weights.h5")
        meta = {"model": spec["arch"], "input": "caffe", "classes": model.output_shape[-1],
                **{k: v for k, v in spec["meta"].items() if k not in ("model",)}}
        meta.setdefault("input", "caffe")
        native.save(path, {l.name: l.get_weights() for l in model.layers if l.weights}, meta)
        yield path


def _run_child(job) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", "from senet.engines import _child; _child()"],
                          input=json.dumps(job), env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode == 3 and lines:  # a SenetError in the child: the user's problem
        raise ExportError(json.loads(lines[-1])["error"])
    tail = "\n".join(proc.stderr.splitlines()[-20:])
    raise RuntimeError(f"building the {job['engine']} engine failed (exit {proc.returncode}); "
                       f"this is a bug, please report it:\n{tail}")


def no_telemetry():
    """Keep OpenVINO's converter and NNCF from sending usage analytics from this process.

    Called from a library, both send events to Google Analytics without asking (unless the
    user ran OpenVINO's opt-out script), each event from a fork of the calling process: 1-4
    CPU-seconds per conversion measured here, a wait where the network hangs, and data sent
    on senet's users' behalf. Both fall back to their own no-op stand-in when the telemetry
    package cannot be imported, so this makes it unimportable: call it before anything imports
    openvino (whose import loads the converter and, with it, the package)."""
    sys.modules.setdefault("openvino_telemetry", None)


def _child():
    """The child process: build the Keras model, export, convert, quantize, check, save."""
    no_telemetry()
    job = json.loads(sys.stdin.read())
    try:
        report = _build(job)
    except SenetError as err:
        print(json.dumps({"error": " ".join(str(err).split())}))
        sys.exit(3)
    print(json.dumps(report))


def _build(job) -> dict:
    from senet import export
    from senet.bench import image_shape
    from senet.models import create_model

    t0 = time.perf_counter()
    # Logits: the artifact leaves the softmax to numpy, so the checks compare logits, which
    # differ where a wrong artifact differs (near-uniform probabilities would hide it).
    model = create_model(job["arch"], weights=job["weights"], classifier_activation=None,
                         input_shape=image_shape(job["size"]))
    check = _check_inputs(job, model)
    report = {"engine": job["engine"], "precision": job["precision"], "size": job["size"],
              "arch": job["arch"]}
    # Any batch size (the predictor's batch is only where the check runs): one artifact serves
    # every --batch-size.
    if job["engine"] == "onnxruntime":
        export.export(model, os.path.join(job["out"], "model.onnx"), "onnx", batch_size=None)
    else:
        # OpenVINO reads the TensorFlow SavedModel itself: no ONNX step (and none of tf2onnx's
        # memory), and a graph without the input transpose the ONNX route leaves.
        import openvino as ov
        import tensorflow as tf

        saved = os.path.join(job["out"], "savedmodel")
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")
        export.write_saved_model(model, saved, spec)
        ov_model = _pad_into_max_pool(ov.convert_model(saved))
        shutil.rmtree(saved)
        if job["precision"] == "int8":
            ov_model, held_out = _quantize(ov_model, job, model)
            check = held_out
        ov.save_model(ov_model, os.path.join(job["out"], "model.xml"), compress_to_fp16=False)
    run = (_openvino_runner if job["engine"] == "openvino" else _onnxruntime_runner)(
        job["out"], job["precision"], job["batch"])
    report.update(_compare(model, run, check, job))
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _pad_into_max_pool(ov_model):
    """The stem's zero padding (ZeroPadding2D after the ReLU, PyTorch's max-pool padding)
    moved into the MaxPool that follows it.

    OpenVINO fuses a Pad into convolutions but not into MaxPool (a zero pad is not the -inf a
    max pool pads with), so it runs as a separate reference-kernel Pad: 1-2% of SE-ResNeXt-50's
    forward, the one op timm's ONNX export does not have. After a ReLU no value is below zero
    and the two are the same. The build's check against Keras covers the rewrite.
    """
    import openvino as ov

    for pool in ov_model.get_ordered_ops():
        if pool.get_type_name() != "MaxPool":
            continue
        pad = pool.input_value(0).get_node()
        if pad.get_type_name() != "Pad" or pad.get_attributes()["pad_mode"] != "constant":
            continue
        src = pad.input_value(0)
        args = [pad.input_value(i).get_node() for i in range(1, pad.get_input_size())]
        if src.get_node().get_type_name() != "Relu" or any(
                a.get_type_name() != "Constant" for a in args):
            continue
        begin, end, *value = [a.get_data() for a in args]
        if (value and float(value[0]) != 0.0) or begin[:2].any() or end[:2].any():
            continue
        a = pool.get_attributes()
        fused = ov.opset8.max_pool(src, a["strides"], a["dilations"],
                                   [int(p) for p in begin[2:] + a["pads_begin"]],
                                   [int(p) for p in end[2:] + a["pads_end"]], a["kernel"],
                                   a["rounding_type"], "explicit", a["index_element_type"],
                                   a["axis"])
        fused.set_friendly_name(pool.get_friendly_name())
        pool.output(0).replace(fused.output(0))
    ov_model.validate_nodes_and_infer_types()
    return ov_model


def _check_inputs(job, model):
    """Inputs to check the artifact on: the calibration images if any, else random noise in
    the models' input range (enough for float32, whose check is a max difference). Checked at
    the predictor's batch, whose compiled program OpenVINO then caches for its first run."""
    n = job["batch"] or 4
    if job.get("calibration"):
        return _load_images(job["calibration"][:max(n, 16)], job)
    return np.random.default_rng(0).uniform(-128, 128, (n, job["size"], job["size"], 3)).astype(
        np.float32)


def _load_images(paths, job):
    from senet.imagenet import preprocess_input
    from senet.images import eval_transform, load_pil

    pre = job["meta"].get("preprocessing") or {}
    crop = pre.get("crop_pct", 0.875)
    interp = pre.get("interpolation", "bilinear")
    out = []
    for p in paths:
        try:
            out.append(eval_transform(load_pil(p), job["size"], crop, interp))
        except SenetError:
            continue  # an unreadable calibration image is skipped
    if not out:
        raise ArgumentError("none of the calibration images could be read.")
    return preprocess_input(np.stack(out), data_format="channels_last")


def _batches(x, batch):
    b = batch or len(x)
    for i in range(0, len(x), b):
        part = x[i:i + b]
        n = len(part)
        if batch and n < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - n, axis=0)])
        yield part, n


def _compare(model, run, x, job) -> dict:
    """How the artifact's logits agree with the Keras model's on `x` (ExportError if not)."""
    ref, got = [], []
    for part, n in _batches(x, job["batch"]):
        ref.append(np.asarray(model.predict_on_batch(part))[:n])
        got.append(run(part, logits=True)[:n])
    ref, got = np.concatenate(ref), np.concatenate(got)
    diff = float(np.abs(ref - got).max())
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    out = {"checked_on": len(x), "max_abs_diff": diff, "top1_agreement": agreement,
           "checked_with": "calibration images" if job.get("calibration") else "random inputs"}
    if job["precision"] == "float32" and diff > 1e-4 * max(1.0, float(np.abs(ref).max())):
        raise ExportError(f"the {job['engine']} engine differs from Keras by {diff:.3g} (allowed "
                          "1e-4); nothing was cached. Please report this as a bug.")
    if job["precision"] == "int8" and agreement < job["min_agreement"]:
        raise ExportError(
            f"the int8 model agrees with float32 on {agreement:.1%} of {len(x)} held-out "
            f"images, below the minimum {job['min_agreement']:.1%}; nothing was written. Give "
            "more (or more typical) calibration images, lower --min-agreement, or use bfloat16.")
    return out


def _quantize(ov_model, job, model):
    """NNCF post-training int8 quantization on 3/4 of the images; the rest are held out."""
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("int8 needs NNCF: pip install 'senet[openvino]'") from None
    images = _load_images(job["calibration"], job)
    if len(images) < 8:
        raise ArgumentError(f"int8 needs at least 8 readable calibration images (got "
                            f"{len(images)}); a few hundred is typical.")
    held = max(4, len(images) // 4)
    calib, held_out = images[:-held], images[-held:]
    name = ov_model.inputs[0].get_any_name()
    shape = ov_model.inputs[0].get_partial_shape()
    fixed = shape[0].is_static
    items = list(_batches(calib, shape[0].get_length() if fixed else 1))
    dataset = nncf.Dataset(items, lambda item: {name: item[0]})
    quantized = nncf.quantize(ov_model, dataset, subset_size=len(items),
                              preset=nncf.QuantizationPreset.MIXED)
    return quantized, held_out


# --------------------------------------------------------------------------- runners


def openvino_config(precision, hint="LATENCY") -> dict:
    """How senet compiles for OpenVINO's CPU plugin (the benchmark's peer gets the same,
    with the latency hint: one request, called the usual way).

    The precision is always explicit: on CPUs with AMX, OpenVINO's default is bfloat16.
    int8 models run their quantized layers in int8 and the rest in float32.
    """
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
            "PERFORMANCE_HINT": hint}


def _openvino_runner(directory, precision, batch, settings=None):
    """The artifact compiled for `batch` images a call (None: any, as a dynamic shape);
    `settings`: CPU plugin properties over senet's own (`benchmarks/openvino_setting.py`).

    A batch of several images is split across OpenVINO's streams: compiled with the
    THROUGHPUT hint, the CPU plugin runs one request per stream at once, each on its own
    cores, where one request of the whole batch (the LATENCY hint) spreads every layer over
    all of them. On this project's 2 cores, 16 images: 1.02-1.08x (the same graph both
    ways, alternated: `benchmarks/openvino_split.py`); OpenVINO's own guide expects more
    with more cores. A first compile at the whole batch asks the plugin how many streams it
    chooses; the batch is cut into that many parts, the last one padded.
    """
    import openvino as ov

    from senet.weights.hub import cached_path

    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cached_path("engines/openvino-blobs/x").parent)})
    model = core.read_model(os.path.join(directory, "model.xml"))

    def compiled_for(n, config):
        if n is not None:
            shape = model.inputs[0].get_partial_shape()
            shape[0] = n
            model.reshape({model.inputs[0]: shape})
        return core.compile_model(model, "CPU", {**config, **(settings or {})})

    parts = 1
    if batch is not None and batch > 1:
        compiled = compiled_for(batch, openvino_config(precision, "THROUGHPUT"))
        parts = min(batch, int(compiled.get_property("NUM_STREAMS")))
    if parts == 1:
        compiled = compiled_for(batch, openvino_config(precision))
        request = compiled.create_infer_request()

        def logits_of(x):
            return np.array(request.infer({0: x})[compiled.outputs[0]], np.float32, copy=True)
    else:
        part = -(-batch // parts)
        parts = -(-batch // part)
        compiled = compiled_for(part, {**openvino_config(precision, "THROUGHPUT"),
                                       "NUM_STREAMS": parts})
        queue = ov.AsyncInferQueue(compiled, parts)
        out = np.zeros((parts * part, *compiled.outputs[0].get_shape()[1:]), np.float32)

        def collect(request, i):
            out[i * part:(i + 1) * part] = request.get_output_tensor(0).data

        queue.set_callback(collect)

        def logits_of(x):
            if len(x) < parts * part:
                x = np.concatenate([x, np.zeros((parts * part - len(x), *x.shape[1:]), x.dtype)])
            for i in range(parts):
                queue.start_async({0: x[i * part:(i + 1) * part]}, i)
            queue.wait_all()
            return out[:batch].copy()

    def run(x, logits=False):
        y = logits_of(x)
        return y if logits else softmax(y)

    run.requests = parts  # requests in flight per call (a batch split across streams)
    return run


def _onnxruntime_runner(directory, precision, batch):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(os.path.join(directory, "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x, logits=False):
        out = np.asarray(session.run(None, {name: x})[0], np.float32)
        return out if logits else softmax(out)

    return run


def softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
