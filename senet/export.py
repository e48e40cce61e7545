"""Export a Keras SENet model to SavedModel, ONNX or TFLite, and prove the artifact by running it.

Export traces the model with TensorFlow, so it needs the TensorFlow backend. Every format is
checked after writing: the artifact is loaded by its own runtime (`tf.saved_model.load`,
onnxruntime, the TFLite interpreter) and its output compared with the Keras model's.

SavedModel: see `write_saved_model` for why not plain `model.export`. TFLite: converted from
that SavedModel. ONNX: `model.export(format="onnx")`, i.e. tf2onnx. Grouped convolutions
(SE-ResNeXt, SENet-154) are `senet.blocks.Conv2D`, TensorFlow's plain grouped Conv2D op,
which every format maps to a grouped convolution (ONNX `Conv` with `group`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from senet._io import atomic_path, make_readable
from senet.errors import ExportError, MissingDependencyError

FORMATS = ("savedmodel", "onnx", "tflite")
_REQUIRES = {"onnx": ("tf2onnx", "onnxruntime")}  # beyond TensorFlow; import name = pip name
TOLERANCE = 1e-4  # max |artifact - Keras|, relative to the output's scale when that exceeds 1


def check_ready(fmt):
    """Fail fast, before a model is built, when `fmt` cannot be exported here."""
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    missing = [name for name in _REQUIRES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"{fmt} export needs {' and '.join(missing)}: "
                                     f"pip install 'senet[onnx]'")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"export traces the model with TensorFlow, but Keras runs on "
            f"{keras.backend.backend()!r} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')!r}); "
            "rerun with KERAS_BACKEND=tensorflow (the exported file does not depend on it).")


def export(model, path, fmt, batch_size=None):
    """Write `model` to `path` in format `fmt`, then run the artifact and compare.

    `batch_size=None` exports a dynamic batch dimension. Returns a report: the path, the input
    signature, the file size and the measured max difference from Keras. Raises ExportError if the artifact disagrees with the model.
    """
    check_ready(fmt)
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32, name="input")
    t0 = time.perf_counter()
    if fmt == "savedmodel":
        with _atomic_dir(path) as tmp:
            write_saved_model(model, tmp, spec)
            diff = _check(model, tmp, fmt, batch_size)
    else:
        with atomic_path(path, suffix="." + fmt) as tmp:
            if fmt == "onnx":
                with _tf2onnx_settings():
                    model.export(tmp, format="onnx", input_signature=[spec], verbose=False)
            else:
                with open(tmp, "wb") as f:
                    f.write(_tflite_bytes(model, spec))
                    f.flush()
                    os.fsync(f.fileno())
            diff = _check(model, tmp, fmt, batch_size)
    return {
        "model": model.name, "format": fmt, "path": os.fspath(path),
        "input_shape": list(spec.shape), "bytes": _size(path),
        "max_abs_diff": diff,
        "seconds": time.perf_counter() - t0,
    }


@contextlib.contextmanager
def _tf2onnx_settings():
    """tf2onnx with its errors only, and with its memory use bounded by frequent full GCs.

    tf2onnx's optimizer deep-copies the whole graph, weights included, before each of its
    passes; the discarded copies are reference cycles, which Python's default thresholds
    collect long after dozens have piled up (10 GB peak for SE-ResNet-50's 112 MB; SENet-154
    ran out of 24 GB). Freezing the objects alive now and collecting the oldest generation
    at every chance frees each copy in time (3 GB peak). It also logs every step at INFO and
    warns about numpy 2.
    """
    import logging

    logger = logging.getLogger("tf2onnx")
    level, thresholds = logger.level, gc.get_threshold()
    logger.setLevel(logging.ERROR)
    gc.freeze()
    gc.set_threshold(thresholds[0], 1, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        logger.setLevel(level)


# --------------------------------------------------------------------------- formats


def write_saved_model(model, directory, spec):
    """`model.export(format="tf_saved_model")`, but storing each weight once, not twice.

    `model.export` tracks the model's `keras.Variable` wrappers and, separately, the
    `tf.Variable`s its serving function captures, and TensorFlow saves both (keras-team/keras
    #23553): twice the disk and memory. An `ExportArchive` that only adds the endpoint still
    saves every captured variable (Keras documents `track()` as needed only for lookup layers
    and for `.variables` on the reloaded object, which serving does not use).
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", model.__call__, input_signature=[spec])
    archive.write_out(directory, verbose=False)


def _tflite_bytes(model, spec):
    """Convert through a temporary SavedModel: the converter path TensorFlow supports best."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="senet-export-") as tmp:
        write_saved_model(model, tmp, spec)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def run_artifact(path, fmt, x):
    """Run an exported artifact on the batch `x` with the format's own runtime."""
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # must outlive the call: it owns the variables
        return loaded.serve(tf.constant(x)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    interpreter = _tflite_interpreter(path)
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _tflite_interpreter(path):
    """LiteRT's interpreter when installed; TensorFlow's (deprecated, still in 2.21) otherwise."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the deprecation notice
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def _check(model, path, fmt, batch_size):
    """Max |artifact - Keras| on random Caffe-range inputs; ExportError above TOLERANCE."""
    n = batch_size or 2  # a dynamic batch is checked with more than one image
    shape = [d or 224 for d in model.input_shape[1:]]  # any size fits a dynamic one
    x = np.random.default_rng(0).uniform(-128, 128, (n, *shape)).astype("float32")
    ref = np.asarray(model.predict_on_batch(x))
    got = np.asarray(run_artifact(path, fmt, x))
    if got.shape != ref.shape:
        raise ExportError(f"the exported {fmt} model returns shape {got.shape}, Keras {ref.shape}; "
                          "please report this as a bug.")
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= TOLERANCE * max(1.0, float(np.max(np.abs(ref)))):
        raise ExportError(f"the exported {fmt} model differs from Keras by up to {diff:.3g} "
                          f"(allowed {TOLERANCE:g}); nothing was written. Please report this as a bug.")
    return diff


# --------------------------------------------------------------------------- files


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


@contextlib.contextmanager
def _atomic_dir(path):
    """Yield a new directory beside `path`, swapped into place if the block succeeds.

    A SavedModel is a directory, which `senet._io.atomic_path` (files) cannot rename over.
    An existing SavedModel at `path` is replaced; any other non-empty directory is refused
    rather than deleted.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ExportError(f"{path} is a file, and a SavedModel is a directory; "
                          "choose another --output.")
    if os.path.isdir(path) and os.listdir(path) \
            and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ExportError(f"{path} is a non-empty directory that is not a SavedModel; "
                          "choose a new or empty directory for --output.")
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.part-", dir=parent)
    make_readable(tmp)
    try:
        yield tmp
        old = None
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.replace(path, old)  # `old` is empty, so the rename may replace it
        try:
            os.replace(tmp, path)
        except OSError:
            if old:
                os.replace(old, path)
            raise
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
