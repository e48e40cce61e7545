"""senet export: every artifact, run by its own runtime, reproduces the Keras model.

se_resnet18 has plain convs only; se_resnext26_32x4d has grouped ones (32 groups). The
models run at 96 px (the graph is the same at any size, the test is faster); the plain one is
exported as logits, whose differences show where near-uniform random probabilities would not.
The grouped model goes through the command line (in this process; once in a child process).
"""

import json
import math
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import senet  # noqa: E402
from cli_runner import run, run_subprocess  # noqa: E402
from senet import export  # noqa: E402
from senet.weights import native  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="export traces with the TensorFlow backend")
SIZE = 96
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}
# ONNX and TFLite are converted and run by their own runtimes (10-25 s each): --runslow.
FORMAT_CASES = [pytest.param(f, marks=() if f == "savedmodel" else pytest.mark.slow, id=f)
                for f in export.FORMATS]


def needs(fmt):
    """Skip a test whose format's runtime is not installed."""
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A senet weights file of random weights per model, so export and reference agree."""
    paths = {}

    def get(name):
        if name not in paths:
            m = senet.create_model(name)
            paths[name] = str(tmp_path_factory.mktemp("weights") / f"{name}.weights.h5")
            native.save(paths[name], {l.name: l.get_weights() for l in m.layers if l.weights},
                        {"model": name, "input": "caffe", "class_order": "sorted",
                         "classes": 1000, "source": {"kind": "test", "file": "x"}})
        return paths[name]

    return get


def run_artifact(path, fmt, x):
    """What a user of each format does, written here independently of `senet.export`."""
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(path)
        return loaded.serve(tf.constant(x)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"]
        return session.run(None, {"input": x})[0]
    interpreter = tf.lite.Interpreter(model_path=path)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def images(n, seed=1, size=SIZE):
    return np.random.default_rng(seed).uniform(-128, 128, (n, size, size, 3)).astype("float32")


def assert_reproduces(path, fmt, name, weights, batch_sizes, logits=False):
    reference = senet.create_model(name, weights=weights, input_shape=(SIZE, SIZE, 3),
                                   classifier_activation=None if logits else "softmax")
    for n in batch_sizes:
        x = images(n)
        got, want = run_artifact(path, fmt, x), reference.predict_on_batch(x)
        assert got.shape == want.shape == (n, 1000)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1, np.abs(want).max()))
        assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("fmt", FORMAT_CASES)
def test_plain_convs_export_reproduces_keras(fmt, weights_file, tmp_path):
    needs(fmt)
    name = "se_resnet18"
    model = senet.create_model(name, weights=weights_file(name), input_shape=(SIZE, SIZE, 3),
                               classifier_activation=None)
    path = str(tmp_path / ("out" + SUFFIX[fmt]))
    report = export.export(model, path, fmt)
    assert report["input_shape"] == [None, SIZE, SIZE, 3]
    assert report["max_abs_diff"] <= 1e-4 * max(1, np.abs(model.predict_on_batch(images(2))).max())
    assert_reproduces(path, fmt, name, weights_file(name), batch_sizes=(1, 3),  # dynamic batch
                      logits=True)
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary left behind


@pytest.mark.parametrize("fmt", FORMAT_CASES)
def test_grouped_convs_export_from_the_command_line(fmt, weights_file, tmp_path):
    needs(fmt)
    name = "se_resnext26_32x4d"
    path = str(tmp_path / ("rx26" + SUFFIX[fmt]))
    cli = run_subprocess if fmt == "onnx" else run  # the smoke test: one real command
    proc = cli("export", "--model", name, "--weights", weights_file(name), "--format", fmt,
               "--output", path, "--batch-size", "1", "--size", SIZE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Wrote {path} ({fmt}")
    assert_reproduces(path, fmt, name, weights_file(name), batch_sizes=(1,))
    if fmt == "onnx":
        assert_grouped_convs_are_single_onnx_convs(path)


def assert_grouped_convs_are_single_onnx_convs(path):
    """senet.blocks.Conv2D gives ONNX Conv nodes with group=32, not a split per group or an
    opaque call."""
    onnx = pytest.importorskip("onnx")
    nodes = onnx.load(path).graph.node
    ops = {n.op_type for n in nodes}
    assert "StatefulPartitionedCall" not in ops and "Split" not in ops
    groups = [a.i for n in nodes if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert groups.count(32) == 8  # one 3x3 conv per unit, 2+2+2+2 units


def test_savedmodel_stores_each_weight_once(tmp_path):
    """`model.export` would store every variable twice (keras-team/keras#23553)."""
    model = senet.create_model("se_resnet18", input_shape=(64, 64, 3), include_top=False)
    export.export(model, str(tmp_path / "sm"), "savedmodel")
    stored = tf.train.list_variables(str(tmp_path / "sm" / "variables" / "variables"))
    values = sum(math.prod(shape) for name, shape in stored if "VARIABLE_VALUE" in name)
    assert model.count_params() <= values <= model.count_params() + 16


def test_savedmodel_replaces_a_savedmodel_but_not_another_directory(tmp_path):
    model = senet.create_model("se_resnet18", input_shape=(64, 64, 3), include_top=False)
    out = tmp_path / "sm"
    export.export(model, str(out), "savedmodel")
    export.export(model, str(out), "savedmodel", batch_size=4)
    assert sorted(os.listdir(tmp_path)) == ["sm"]
    sig = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert sig.structured_input_signature[1]["input"].shape.as_list() == [4, 64, 64, 3]

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="not a SavedModel"):
        export.export(model, str(tmp_path / "notes"), "savedmodel")
    assert os.listdir(tmp_path / "notes") == ["keep.txt"]


def test_export_needs_the_tensorflow_backend(tmp_path):
    pytest.importorskip("jax")
    env = {"KERAS_BACKEND": "jax"}
    proc = run_subprocess("export", "--model", "se_resnet18", "--format", "tflite",
                          "--output", str(tmp_path / "m.tflite"), env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "KERAS_BACKEND=tensorflow" in lines[0], proc.stderr
    assert not os.listdir(tmp_path)


def test_bad_batch_size_is_one_line(tmp_path):
    proc = run("export", "--model", "se_resnet18", "--format", "onnx",
               "--output", str(tmp_path / "m.onnx"), "--batch-size", "0")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "senet export: error: --batch-size must be at least 1 (got 0); "
        "leave it out for a dynamic batch size."]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_senet154_exports(fmt, tmp_path):
    """SENet-154: 115M parameters and 64-group convs in all 50 units. The three exports take
    3 minutes and up to 9 GB together: opt-in (SENET_LARGE_TESTS=1); every format and the
    grouped-conv export itself are checked on the small nets above."""
    if not os.environ.get("SENET_LARGE_TESTS"):
        pytest.skip("set SENET_LARGE_TESTS=1 (SENet-154's exports: minutes, 9 GB)")
    needs(fmt)
    model = senet.create_model("senet154")
    path = str(tmp_path / ("senet154" + SUFFIX[fmt]))
    report = export.export(model, path, fmt, batch_size=1)
    x = images(1, size=224)
    np.testing.assert_allclose(run_artifact(path, fmt, x), model.predict_on_batch(x),
                               rtol=0, atol=1e-4)
    print(json.dumps(report))
