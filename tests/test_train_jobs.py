"""Training jobs end to end: resume after SIGKILL, fine-tuning a converted file, overfitting
real photographs, and the trained weights through `senet predict` / `senet evaluate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from cli_runner import run
from senet import training
from senet.variants import tiny
from senet.weights import native
from train_helpers import env_for_child, label_file, photos, write_digits

# Training runs in a child process, killable: prints "step E S" after every batch. Arguments:
# the data, then an output folder and 0/1 (resume) for each run, one after the other.
CHILD = textwrap.dedent("""
    import sys, keras
    from senet import training
    from senet.variants import tiny

    class Steps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            print("step", self.epoch, batch, flush=True)

    data, runs = sys.argv[1], sys.argv[2:]
    for out, resume in zip(runs[::2], runs[1::2]):
        job = training.Job(data=data, model=tiny("se_resnet18"), output=out, size=32,
                           resume=resume == "1", verbose=False, tensorboard=False, plot=False,
                           callbacks=[Steps()],
                           recipe=training.Recipe(epochs=3, batch_size=16, lr=0.05))
        training.train(job)
        print("done", out, flush=True)
""")


def _child(data, *runs):
    """A child process for `runs`: (output folder, resume) pairs."""
    args = [str(a) for out, resume in runs for a in (out, int(resume))]
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for_child())


def _weights(path):
    return native.read(path)[0]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for k in a for x, y in zip(a[k], b[k]))


@pytest.mark.slow
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(tmp_path):
    """Killed with SIGKILL in the middle of epoch 2, then resumed: the same final weights as
    a run that was never interrupted. Both runs read the epoch-1 checkpoint state exactly
    (model, optimizer momentum and step, seed-generator state) and epoch 2 sees the same
    batches (the data order and crops are functions of seed and epoch), so the only
    difference allowed is floating-point: none is expected on one CPU (measured: 0). The
    uninterrupted run follows the resumed one in the same child (one interpreter fewer)."""
    data = write_digits(tmp_path / "d", per_class=12)  # 120 images: 7 steps of 16
    victim = _child(data, (tmp_path / "run", False))
    for line in victim.stdout:
        if line.split() == ["step", "1", "3"]:  # epoch 2 (from 0), four steps done
            victim.send_signal(signal.SIGKILL)
            break
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    state = training.read_state(tmp_path / "run" / training.CHECKPOINT)
    assert state["epoch"] == 1  # killed during epoch 2: only epoch 1 was saved
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not [p for p in os.listdir(tmp_path / "run") if ".part-" in p]  # nothing half-written

    again = _child(data, (tmp_path / "run", True), (tmp_path / "ref", False))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    lines = [l for l in out.splitlines() if l.startswith(("step ", "done "))]
    assert lines[0] == "step 1 0"  # it went on with epoch 2, from its first step
    resumed_end = lines.index(f"done {tmp_path / 'run'}")
    assert {l.split()[1] for l in lines[:resumed_end]} == {"1", "2"}  # epochs 2 and 3 only
    assert lines[resumed_end + 1] == "step 0 0" and lines[-1] == f"done {tmp_path / 'ref'}"
    a, b = _weights(tmp_path / "ref" / "last.weights.h5"), _weights(tmp_path / "run" / "last.weights.h5")
    worst = _max_diff(a, b)
    print(f"resumed vs uninterrupted: max |weight difference| {worst:.3g}")
    assert worst <= 1e-6
    ref_hist = json.loads((tmp_path / "ref" / "summary.json").read_text())["final"]
    run_hist = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert run_hist["loss"] == pytest.approx(ref_hist["loss"], rel=1e-6)


def _converted_file(tmp_path, variant):
    """A timm checkpoint of `variant` (random, well-scaled; 1000 classes), read by the
    converter and written as a senet weights file, as `senet convert` does."""
    pytest.importorskip("timm")
    from senet.conversion import read
    from timm_reference import random_timm_model, save

    src = save(random_timm_model(variant, seed=1), tmp_path / "model.safetensors", "safetensors")
    weights, meta = read(src, variant)
    out = tmp_path / "converted.weights.h5"
    native.save(out, weights, meta)
    return out, weights


@pytest.mark.slow
def test_fine_tuning_a_converted_file_with_a_frozen_backbone_changes_only_the_head(tmp_path):
    variant = tiny("seresnet50")
    wfile, original = _converted_file(tmp_path, variant)
    data = write_digits(tmp_path / "d", per_class=4)

    def tune(name, freeze):
        job = training.Job(data=str(data), model=variant, output=str(tmp_path / name),
                           weights=str(wfile), size=32, verbose=False, tensorboard=False,
                           plot=False, recipe=training.Recipe(epochs=1, batch_size=8,
                                                              freeze=freeze, head_lr=0.1))
        training.train(job)
        return native.read(tmp_path / name / "last.weights.h5")

    frozen, meta = tune("frozen", "backbone")
    assert meta["classes"] == 10 and meta["input"] == "torch"  # timm's convention, adapted
    assert frozen["classifier"][0].shape == (original["classifier"][0].shape[0], 10)
    changed = [k for k in original if k != "classifier"
               and any(not np.array_equal(x, y) for x, y in zip(original[k], frozen[k]))]
    assert changed == []  # kernels, BatchNorm weights and statistics: untouched
    assert set(frozen) == set(original)

    full, _ = tune("full", "none")
    same = [k for k in original if k != "classifier"
            and all(np.array_equal(x, y) for x, y in zip(original[k], full[k]))]
    assert same == []  # unfrozen, every layer trains


class StopAtPerfect(keras.callbacks.Callback):
    """A user's callback that ends training early (as keras.callbacks.EarlyStopping does)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = logs["val_accuracy"] == 1.0


@pytest.mark.slow
def test_overfits_64_real_photographs(tmp_path):
    """64 ImageNet photographs, one class each, to 100% accuracy (measured with the
    evaluation transform on the same images) with a tiny SE-ResNeXt. It gets there near
    epoch 27 of 40, where a callback stops it: a stop asked by a callback ends the job
    normally (its summary and weights written)."""
    files = photos(64)
    labels = label_file(tmp_path / "labels.txt", files)
    job = training.Job(data=str(files[0].parent), labels=str(labels), val=str(files[0].parent),
                       val_labels=str(labels), model=tiny("seresnext26d_32x4d"),
                       output=str(tmp_path / "run"), size=64, scale_min=0.5, verbose=False,
                       tensorboard=False, plot=False, callbacks=[StopAtPerfect()],
                       recipe=training.Recipe(epochs=40, batch_size=16, lr=0.1, warmup_epochs=2,
                                              label_smoothing=0.0, weight_decay=0.0))
    summary = training.train(job)
    assert summary["classes"] == 64 and summary["train_images"] == 64
    assert summary["best"] == 1.0, summary["final"]
    print(f"100% at epoch {summary['best_epoch']}")
    assert len(summary["history"]) == summary["best_epoch"] < 40
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best"] == 1.0
    assert (tmp_path / "run" / "best.weights.h5").is_file()


@pytest.mark.slow
def test_trained_weights_work_in_predict_and_evaluate(tmp_path):
    """`senet train` through the command line, then the weights it wrote in `senet predict`
    (the dataset's class names, at the trained size) and `senet evaluate` (class folders)."""
    train = write_digits(tmp_path / "train", per_class=20, count=1400)
    held = write_digits(tmp_path / "held", per_class=5, first=1400, count=397)
    out = tmp_path / "run"
    r = run("train", train, "--model", "se_resnet18", "--output", out, "--epochs", "2",
            "--batch-size", "32", "--val", held, "--no-tensorboard")
    assert r.returncode == 0, r
    assert "epoch 2/2" in r.stdout and "val_acc" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["size"] == 32 and summary["val_images"] == 50
    # no flag: flips are off for digits (mirror images look like other digits), and said so
    assert summary["hflip"] == 0 and "No horizontal flips" in r.stdout
    image = sorted((held / "7").iterdir())[0]
    p = run("predict", image, "--weights", out / "best.weights.h5", "--top", "3", "--json")
    assert p.returncode == 0, p
    preds = json.loads(p.stdout)["predictions"]
    assert {x["name"] for x in preds} <= {str(d) for d in range(10)} and len(preds) == 3
    e = run("evaluate", held, "--weights", out / "best.weights.h5", "--json", tmp_path / "e.json")
    assert e.returncode == 0, e
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["images"] == 50 and result["size"] == 32
    # evaluate with the same transform as training's validation: the same accuracy (one image
    # is 2 points; Keras' metric is a float32 mean, 0.58 reads 0.57999998)
    assert result["top1"] == pytest.approx(100 * summary["final"]["val_accuracy"], abs=1e-4)
