"""senet benchmark and the FLOP count behind its GFLOP/s. Timings are only checked to be positive."""

import importlib.util
import json

import pytest

keras = pytest.importorskip("keras")

import senet  # noqa: E402
from cli_runner import run  # noqa: E402
from senet import bench  # noqa: E402
from senet.engines import ENGINES  # noqa: E402

HAS_TIMM = importlib.util.find_spec("timm") is not None


def assert_timed(entry):
    assert entry["images_per_s"] > 0
    assert 0 < entry["latency_ms_median"] <= entry["latency_ms_p95"]
    assert entry["gflops_per_s"] > 0


@pytest.mark.slow
def test_benchmark_json_default_path_peers_and_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("SENET_HOME", str(tmp_path / "home"))
    proc = run("benchmark", "--model", "se_resnet18", "--batch-size", "1,2", "--iters", "2",
               "--warmup", "1", "--size", "64", "--engine", "keras", "--json",
               "--plot", tmp_path / "speed.png")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert (r["model"], r["batch_sizes"], r["size"]) == ("se_resnet18", [1, 2], 64)
    assert r["flops_per_image"] > 0 and r["senet"]["engine"] == "openvino"  # what predict runs
    assert_timed(r["senet"])
    labels = {(x["label"], x["batch_size"]) for x in r["results"]}
    for batch in (1, 2):
        assert ("senet keras (tensorflow) float32", batch) in labels or \
            keras.backend.backend() != "tensorflow"
        if HAS_TIMM:
            assert {("timm eager float32", batch), ("openvino on timm's ONNX float32", batch),
                    ("onnxruntime on timm's ONNX float32", batch)} <= labels
    for x in r["results"]:
        assert_timed(x)
        if HAS_TIMM:
            assert x["vs_openvino_on_timm"] > 0
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same random weights at both batch sizes: one engine built and cached, not two
    built = [p.name for p in (tmp_path / "home" / "engines").iterdir()
             if p.is_dir() and "-openvino-" in p.name]
    assert len(built) == 1 and "openvino-float32-64px" in built[0], built


@pytest.mark.slow
def test_other_backend_is_measured_in_a_child_process():
    """Keras is imported here already, so another backend needs a fresh interpreter. PyTorch
    unless it is this one: a JAX child compiles the model, 37 CPU-seconds against 7."""
    other = "torch" if keras.backend.backend() != "torch" else "jax"
    pytest.importorskip(other)
    r = bench.run("se_resnet18", batch_sizes=[1], size=64, warmup=0, iters=1, engines=["keras"],
                  backends=[other], peers=[])
    rows = {x["label"]: x for x in r["results"]}
    assert_timed(rows[f"senet keras ({other}) float32"])


def test_engine_all_skips_pairs_that_do_not_exist(monkeypatch):
    """`--engine all --precisions all` times every pair that exists and names the others
    (ONNX Runtime has no bfloat16 and no int8, Keras no int8) instead of failing."""
    timed = []

    def fake_run(name, engine, precision, batch_size, **kw):
        timed.append((engine, precision))
        return {"images_per_s": 1.0, "latency_ms_median": 1.0, "latency_ms_p95": 1.0}

    monkeypatch.setattr(bench, "senet_run", fake_run)
    r = bench.run("se_resnet18", batch_sizes=[1], size=64, engines=list(ENGINES),
                  precisions=["float32", "bfloat16", "int8"], peers=[])
    assert sorted(timed) == sorted([("openvino", "float32"), ("keras", "float32"),
                                    ("keras", "bfloat16"), ("openvino", "bfloat16"),
                                    ("openvino", "int8"), ("onnxruntime", "float32")])
    assert sorted(line.split(":")[0] for line in r["skipped"]) == [
        "keras int8", "onnxruntime bfloat16", "onnxruntime int8"]


def test_benchmark_user_errors_are_one_line():
    proc = run("benchmark", "--model", "se_resnet5", "--json")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Unknown model name 'se_resnet5'" in lines[0] \
        and "se_resnet50" in lines[0], proc.stderr
    proc = run("benchmark", "--model", "se_resnet18", "--iters", "0")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "senet benchmark: error: iters must be at least 1 (got 0)."
    proc = run("benchmark", "--model", "se_resnet18", "--peers", "tim")
    assert proc.returncode == 1 and "Unknown peer 'tim'" in proc.stderr


def test_flops_of_a_tiny_model_by_hand():
    """Each layer's multiply-adds, from the textbook formula, for a known small net."""
    layers = keras.layers
    channels_first = keras.config.image_data_format() == "channels_first"
    inp = keras.Input((3, 8, 8) if channels_first else (8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inp)  # 8x8 out, 4 filters of 3x3x3
    x = layers.Conv2D(8, 3, strides=2, groups=2)(x)  # 3x3 out, 8 filters of 3x3x(4/2)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(5)(x)  # 8 -> 5
    model = keras.Model(inp, out)
    by_hand = 8 * 8 * 4 * (3 * 3 * 3) + 3 * 3 * 8 * (3 * 3 * 2) + 5 * 8
    assert by_hand == 8248
    assert bench.macs(model) == by_hand
    assert bench.flops(model) == 2 * by_hand
    nested = keras.Sequential([keras.Input(inp.shape[1:]), model, layers.Dense(2)])
    assert bench.macs(nested) == by_hand + 5 * 2


def test_se_resnet50_flops_match_the_paper():
    """Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018 / TPAMI), Table 2: SE-ResNet-50
    costs 3.87 GFLOPs at 224x224, counting multiply-adds as the paper does (ResNet-50: 3.86)."""
    model = senet.create_model("se_resnet50")
    assert bench.macs(model) == pytest.approx(3.87e9, rel=0.02)
    assert bench.flops(model) == pytest.approx(2 * 3.87e9, rel=0.02)


def test_benchmarked_nets_get_batchnorms_like_a_trained_nets():
    """A fresh net's BatchNorms are the identity (zero biases once folded, which optimizers
    drop); the benchmark draws them as training would leave them, the same for senet's net
    and timm's, reproducibly."""
    import numpy as np

    def bn_values(model):
        return [keras.ops.convert_to_numpy(w) for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights]

    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    fresh = senet.create_model("se_resnet18", weights=None, input_shape=(32, 32, 3))
    before = keras.ops.convert_to_numpy(fresh(x))
    drawn = bench.trained_like(fresh)
    assert drawn is fresh
    values = bn_values(fresh)
    assert values and all(v.std() > 0.05 for v in values)  # gamma, beta, mean, variance
    assert all(v.min() > 0.4 for v in values[0::4] + values[3::4])  # scales and variances
    assert np.abs(keras.ops.convert_to_numpy(fresh(x)) - before).max() > 0.01 * before.max()
    again = bench.trained_like(senet.create_model("se_resnet18", weights=None,
                                                  input_shape=(32, 32, 3)))
    assert all(np.array_equal(a, b) for a, b in zip(bn_values(again), values, strict=True))
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).eval()
    bench.trained_like(net)
    bn = net[1]
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        assert t.detach().std() > 0.05
    assert bn.running_var.min() > 0.4


def test_flops_need_a_fixed_input_size():
    model = senet.create_model("se_resnet18", include_top=False)  # (None, None, 3) input
    with pytest.raises(ValueError, match="fixed input_shape"):
        bench.flops(model)


@pytest.mark.slow
def test_worker_runs_a_step_in_its_own_process_and_reports_its_failure():
    """`bench.Worker` is how the ratio benchmarks keep two runtimes out of one process."""
    kwargs = dict(name="se_resnet18", engine="keras", batch_size=1, size=32)
    with bench.Worker("senet_step", kwargs) as worker:
        r = bench.alternate({"worker": worker}, 1, rounds=2, iters=2)
        proc = worker._proc
        assert len(r["worker"]) == 2 and min(r["worker"]) > 0
    assert proc.returncode == 0  # closed by its stdin ending, not killed
    with pytest.raises(bench.ChildError, match=r"senet_step se_resnet_nope failed in its worker "
                                               r"\(exit 1\): .*se_resnet_nope"):
        bench.Worker("senet_step", {**kwargs, "name": "se_resnet_nope"})
    # `env` reaches the child and wins over the parent's (here a backend Keras refuses)
    with pytest.raises(bench.ChildError, match="no_such_backend"):
        bench.Worker("senet_step", kwargs, env={"KERAS_BACKEND": "no_such_backend"})
