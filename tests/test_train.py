"""Training: the recipe's pieces, a whole job and its outputs, and bad input (one line each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import senet
from cli_runner import one_line_error, run
from senet import training
from senet.variants import tiny
from senet.weights import native
from train_helpers import write_digits

TINY = tiny("se_resnet18")


def _job(tmp_path, data, **kw):
    recipe = training.Recipe(**{"epochs": 2, "batch_size": 16, **kw.pop("recipe", {})})
    # pathlib paths, as a Python user passes them (the job records them as strings)
    return training.Job(data=Path(data), model=kw.pop("model", TINY),
                        output=kw.pop("output", tmp_path / "run"), size=32, verbose=False,
                        recipe=recipe, **kw)


@pytest.mark.backends
def test_weight_decay_reaches_kernels_only_and_the_head_has_its_own_rate():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="classifier")(x))
    model.get_layer("classifier").bias.assign(np.ones(2, "float32"))
    opt = training.SGD(0.1, momentum=0.0, kernel_decay=0.5, head_lr_scale=10.0)
    variables = model.trainable_variables
    before = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in variables}
    opt.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    after = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in variables}
    for path in before:
        if path == "conv/kernel":  # w - lr * wd * w
            np.testing.assert_allclose(after[path], before[path] * (1 - 0.1 * 0.5), rtol=1e-6)
        elif path == "classifier/kernel":  # the head's rate is 10x: w - 1.0 * 0.5 * w
            np.testing.assert_allclose(after[path], before[path] * 0.5, rtol=1e-6)
        else:  # BatchNorm gamma / beta and biases: no decay
            np.testing.assert_array_equal(after[path], before[path])
    opt2 = training.SGD(0.1, momentum=0.9, head_lr_scale=10.0)
    bias = model.get_layer("classifier").bias
    conv = model.get_layer("conv").kernel
    c0 = np.array(keras.ops.convert_to_numpy(conv))
    b0 = np.array(keras.ops.convert_to_numpy(bias))
    opt2.apply([keras.ops.ones(conv.shape), keras.ops.ones(bias.shape)], [conv, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv), c0 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), b0 - 1.0, rtol=1e-6)


def test_schedule_warms_up_linearly_then_follows_cosine_or_steps():
    cos = training.WarmupSchedule(0.4, total=100, warmup=10)
    lr = [float(keras.ops.convert_to_numpy(cos(s))) for s in range(101)]
    np.testing.assert_allclose(lr[:10], [0.04 * (s + 1) for s in range(10)], rtol=1e-5)
    assert lr[10] == pytest.approx(0.4) and lr[55] == pytest.approx(0.2, rel=1e-5)
    assert lr[100] == pytest.approx(0.0, abs=1e-7)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    step = training.WarmupSchedule(0.1, total=90, warmup=0, kind="step", step=30)
    values = [float(keras.ops.convert_to_numpy(step(s))) for s in (0, 29, 30, 60, 89)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-5)
    r = training.Recipe(batch_size=512)
    assert r.peak_lr == pytest.approx(0.2)  # 0.1 per 256 images, scaled with the batch


@pytest.mark.backends
@pytest.mark.slow  # 15 s on TensorFlow, 75 s on JAX (compiling the train and eval steps)
def test_a_tiny_job_trains_and_writes_everything(tmp_path):
    """Two epochs of a tiny SE-ResNet on real digits with a broken file among them: loss falls,
    the broken image is skipped and counted, and the outputs are complete."""
    root = write_digits(tmp_path / "digits", per_class=10)
    (root / "3" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    summary = training.train(_job(tmp_path, root, val_split=0.2,
                                  recipe={"epochs": 3, "lr": 0.05}))
    out = tmp_path / "run"
    assert summary["skipped_images"] >= 1 and "zz_broken.png" in " ".join(summary["skipped"])
    assert summary["epochs"] == 3 and summary["train_images"] + summary["val_images"] == 101
    history = json.loads(h5py.File(out / training.CHECKPOINT).attrs["state"])["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    weights, meta = native.read(out / "last.weights.h5")
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["classes"] == 10
    assert meta["preprocessing"] == {"size": 32, "crop_pct": 0.875, "interpolation": "bilinear"}
    assert meta["model"] == TINY.name and meta["input"] == "caffe"
    assert weights["classifier"][0].shape[-1] == 10
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and "val_accuracy" in rows[0] and "lr" in rows[0]
    assert (out / "best.weights.h5").is_file() and (out / "summary.json").is_file()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    if keras.backend.backend() == "tensorflow":
        assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    # the weights file builds the trained model back (a new session's view)
    model = senet.build(TINY, weights=str(out / "last.weights.h5"), input_shape=(32, 32, 3))
    assert model.senet_weights["class_names"][3] == "3"


# --------------------------------------------------------------------------- bad input

def _checkpoint(out, model):
    out.mkdir(parents=True, exist_ok=True)
    with h5py.File(out / training.CHECKPOINT, "w") as f:
        f.attrs["state"] = json.dumps({"model": model, "epoch": 1, "epochs": 5})


@pytest.mark.parametrize("case, needles", [
    ("single class", ["only one class ('5'"]),
    ("val differs", ["classes differ from the training set's", "training classes it lacks: 9"]),
    ("output is a file", ["is a file, not a directory"]),
    ("output not writable", ["cannot write there"]),
    ("other model's run", ["holds a run of se_resnet50, not se_resnet18"]),
    ("unfinished run", ["already holds a run of se_resnet18 (1/5 epochs done)", "--resume"]),
    ("nothing to resume", ["holds no checkpoint to resume"]),
    ("weights of another architecture", ["holds weights for se_resnet50, not se_resnet18"]),
    ("corrupt checkpoint", ["the checkpoint cannot be read"]),
])
def test_bad_input_is_one_line(tmp_path, case, needles):
    data = write_digits(tmp_path / "d", per_class=2)
    out = tmp_path / "out"
    args = [data, "--model", "se_resnet18", "--output", out, "--epochs", "1", "--size", "32"]
    if case == "single class":
        args[0] = write_digits(tmp_path / "one", per_class=2, first=5, count=1)
    elif case == "val differs":
        val = write_digits(tmp_path / "v", per_class=1)
        for f in (val / "9").iterdir():
            f.unlink()
        (val / "9").rmdir()
        args += ["--val", val]
    elif case == "output is a file":
        out.write_text("x")
    elif case == "output not writable":
        (tmp_path / "plain").write_text("x")
        args[4] = tmp_path / "plain" / "sub"
    elif case == "other model's run":
        _checkpoint(out, "se_resnet50")
    elif case == "unfinished run":
        _checkpoint(out, "se_resnet18")
    elif case == "nothing to resume":
        args.append("--resume")
    elif case == "weights of another architecture":
        wfile = tmp_path / "r50.weights.h5"
        native.save(wfile, {}, {"model": "se_resnet50", "classes": 1000, "input": "caffe"})
        args += ["--weights", wfile]
    elif case == "corrupt checkpoint":
        out.mkdir()
        (out / training.CHECKPOINT).write_bytes(b"half a checkpoint")
        args.append("--resume")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    one_line_error(run("train", *args), "train", *needles)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing lost


def test_options_are_checked_before_anything_runs(tmp_path):
    data = write_digits(tmp_path / "d", per_class=2)
    base = ["train", data, "--model", "se_resnet18", "--output", tmp_path / "o"]
    one_line_error(run(*base, "--accumulate", "3"), "train", "--accumulate 3 must divide")
    one_line_error(run(*base, "--size", "16"), "train", "--size must be at least 32")
    one_line_error(run(*base, "--hflip", "1.5"), "train", "--hflip must be in [0, 1]")
    one_line_error(run(*base, "--model", "se_resnet19"), "train", "Unknown model name")
    assert not (tmp_path / "o").exists()


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    """Two micro-batches of 8 accumulated make one step of 16: the same weights after an
    epoch as the plain batch of 16 (BatchNorm frozen, since its statistics are per batch)."""
    root = write_digits(tmp_path / "d", per_class=4)
    common = {"epochs": 1, "batch_size": 16, "freeze": "bn", "label_smoothing": 0.0}
    training.train(_job(tmp_path, root, output=tmp_path / "a", tensorboard=False, plot=False,
                        recipe=common))
    training.train(_job(tmp_path, root, output=tmp_path / "b", tensorboard=False, plot=False,
                        recipe={**common, "accumulate": 2}))
    a, _ = native.read(tmp_path / "a" / "last.weights.h5")
    b, _ = native.read(tmp_path / "b" / "last.weights.h5")
    worst = max(float(np.max(np.abs(x - y))) for k in a for x, y in zip(a[k], b[k]))
    assert worst < 1e-4, worst
    moved = max(float(np.max(np.abs(x))) for x in a["classifier"])
    assert not math.isclose(moved, 0.0)


def test_mixed_precision_trains_with_float32_weights(tmp_path):
    """--precision bfloat16: Keras' mixed policy (16-bit compute, float32 variables); the
    weights file is float32 as always, and the global policy is restored for what follows."""
    root = write_digits(tmp_path / "d", per_class=4)
    summary = training.train(_job(tmp_path, root, precision="bfloat16", tensorboard=False,
                                  plot=False, recipe={"epochs": 1}))
    assert keras.config.dtype_policy().name == "float32"
    assert math.isfinite(summary["final"]["loss"])
    weights, _ = native.read(tmp_path / "run" / "last.weights.h5")
    assert all(a.dtype == np.float32 for arrays in weights.values() for a in arrays)


def test_a_dataset_of_unreadable_files_is_one_line(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "d" / c / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    r = run("train", tmp_path / "d", "--model", "se_resnet18", "--output", tmp_path / "o",
            "--epochs", "1", "--batch-size", "4", "--size", "32", "--no-tensorboard")
    one_line_error(r, "train", "no image could be read in an epoch (8 unreadable", ".jpg")
    assert not list((tmp_path / "o").iterdir())  # nothing saved
