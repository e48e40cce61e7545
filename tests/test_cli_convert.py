"""`senet convert` as users run it (in-process, and once as a real subprocess), and its
handling of bad input."""

import os

import numpy as np
import pytest

import caffe_reference as ref
from cli_runner import run as senet_cli
from cli_runner import run_subprocess
from senet.weights import native

PROTO = os.path.join(ref.MODELS_DIR, "SE-ResNet-50.prototxt")


@pytest.fixture(scope="module")
def caffemodel(tmp_path_factory):
    path = tmp_path_factory.mktemp("caffe") / "SE-ResNet-50.caffemodel"
    ref.random_caffemodel(PROTO, path, seed=0)
    return path


def one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_convert_writes_a_loadable_file_with_provenance(caffemodel, tmp_path):
    """The smoke test: the real command in a fresh interpreter."""
    out = tmp_path / "se_resnet50.weights.h5"
    r = run_subprocess("convert", caffemodel, "--model", "se_resnet50", "--output", out,
                       "--prototxt", PROTO)
    assert r.returncode == 0, r.stderr
    assert "Wrote" in r.stdout and "devkit" not in r.stdout
    meta = native.read_header(out)["meta"]
    assert meta["model"] == "se_resnet50" and meta["input"] == "caffe"
    assert meta["class_order"] == "sorted" and meta["source"] == {
        "kind": "caffe", "file": "SE-ResNet-50.caffemodel"}
    assert sorted(os.listdir(tmp_path)) == ["se_resnet50.weights.h5"]


def test_bad_inputs_get_one_line_and_leave_nothing(caffemodel, tmp_path):
    out = tmp_path / "out.weights.h5"
    text = tmp_path / "notes.caffemodel"
    text.write_text("layer { name: 'x' }\n")
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(caffemodel.read_bytes()[: 5_000_000])
    other = tmp_path / "SE-ResNeXt-50.caffemodel"
    ref.random_caffemodel(os.path.join(ref.MODELS_DIR, "SE-ResNeXt-50.prototxt"), other)

    one_line_error(senet_cli("convert", text, "--model", "se_resnet50", "-o", out),
                   "notes.caffemodel", "text")
    one_line_error(senet_cli("convert", truncated, "--model", "se_resnet50", "-o", out),
                   "cut.caffemodel", "truncated")
    one_line_error(senet_cli("convert", other, "--model", "se_resnet50", "-o", out),
                   "SE-ResNeXt-50.caffemodel", "wrong shapes", "conv2_1_1x1_reduce")
    one_line_error(senet_cli("convert", caffemodel, "--model", "se_resnet5", "-o", out),
                   "Did you mean 'se_resnet50'")
    one_line_error(senet_cli("convert", tmp_path / "missing.caffemodel", "--model",
                             "se_resnet50", "-o", out), "missing.caffemodel")
    one_line_error(senet_cli("convert", caffemodel, "--model", "se_resnet50", "-o",
                             tmp_path / "out.h5"), ".weights.h5")
    one_line_error(senet_cli("convert", caffemodel, "--from", "torch", "--model", "se_resnet50",
                             "-o", out), "caffemodel")
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["notes.caffemodel", "cut.caffemodel", "SE-ResNeXt-50.caffemodel"])


def _eps_case(caffemodel, tmp_path, seed):
    """(prototxt with eps 1e-3 on every BatchNorm, input, OpenCV's logits with that eps)."""
    text = open(PROTO).read().replace("use_global_stats: true",
                                      "use_global_stats: true\n    eps: 0.001")
    proto = tmp_path / "eps.prototxt"
    proto.write_text(text)
    x = np.random.default_rng(seed).normal(0, 50, (1, 224, 224, 3)).astype("float32")
    logits_cv, _ = ref.opencv_forward(proto, caffemodel, x.transpose(0, 3, 1, 2))
    return proto, x, logits_cv


def _converted_logits(src, x, tmp_path, **kwargs):
    import keras
    import senet
    from senet.conversion import convert

    out = tmp_path / "eps.weights.h5"
    convert(src, "se_resnet50", out, **kwargs)
    model = senet.SEResNet50(weights=str(out), classifier_activation=None)
    return keras.ops.convert_to_numpy(model(x))


def test_batchnorm_eps_from_the_prototxt(caffemodel, tmp_path):
    """A prototxt eps other than 1e-5 is honoured exactly (OpenCV reads the same prototxt)."""
    from senet.imagenet import devkit_to_sorted

    proto, x, logits_cv = _eps_case(caffemodel, tmp_path, seed=0)
    logits = _converted_logits(caffemodel, x, tmp_path, prototxt=proto)
    assert np.abs(logits - logits_cv[:, devkit_to_sorted()]).max() <= 1e-4
    default_logits, _ = ref.opencv_forward(PROTO, caffemodel, x.transpose(0, 3, 1, 2))
    assert np.abs(default_logits - logits_cv).max() > 1e-3  # the eps really matters here


def test_batchnorm_eps_recorded_in_the_caffemodel(caffemodel, tmp_path):
    """Without a prototxt, the eps the caffemodel records for a layer is used."""
    from senet.imagenet import devkit_to_sorted
    from senet.weights.caffe import read_caffemodel, write_caffemodel

    layers = read_caffemodel(caffemodel)
    for l in layers:
        if l.type == "BatchNorm":
            l.bn_eps = 0.001
    with_eps = tmp_path / "eps.caffemodel"
    write_caffemodel(with_eps, layers)
    assert {l.bn_eps for l in read_caffemodel(with_eps) if l.type == "BatchNorm"} == {
        np.float32(0.001)}
    _, x, logits_cv = _eps_case(caffemodel, tmp_path, seed=1)
    logits = _converted_logits(with_eps, x, tmp_path)
    assert np.abs(logits - logits_cv[:, devkit_to_sorted()]).max() <= 1e-4
