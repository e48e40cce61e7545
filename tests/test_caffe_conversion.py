"""Issue 3's proof: converted official Caffe nets compute what Caffe (OpenCV's importer) computes.

For each official prototxt: a random, well-scaled caffemodel (BatchNorm factor != 1), run
through OpenCV, converted by `senet convert`, loaded into the Keras model, on the same inputs.
Run on every backend by tests/run.sh; the five big nets are marked slow.
"""

import os

import numpy as np
import pytest

import keras
import senet
from senet.imagenet import devkit_to_sorted
from senet.conversion import convert
from senet.engines import softmax

import caffe_reference as ref
from forward import forward

pytestmark = [pytest.mark.backends, pytest.mark.references]

NETS = {
    "se_bn_inception": "SE-BN-Inception",
    "se_resnet50": "SE-ResNet-50",
    "se_resnext50_32x4d": "SE-ResNeXt-50",
    "se_resnet101": "SE-ResNet-101",
    "se_resnet152": "SE-ResNet-152",
    "se_resnext101_32x4d": "SE-ResNeXt-101",
    "senet154": "SENet-154",
}
FAST = ("se_bn_inception", "se_resnet50")
PROB_TOL, LOGIT_TOL = 1e-5, 1e-4
RESULTS = os.environ.get("SENET_RECORD_DIFFS")  # append measured max diffs to this file


def images(n=3, seed=0):
    """Inputs in the model's convention (BGR minus mean): noise at the scale the random nets
    are calibrated for (N(0, 50), see caffe_reference), with a different contrast per image."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 1.5, (n, 1, 1, 1))
    return (rng.normal(0, 50, (n, 224, 224, 3)) * scale).astype("float32")


@pytest.fixture(scope="module")
def caffe_files(tmp_path_factory):
    made = {}

    def make(name):
        if name not in made:
            d = tmp_path_factory.mktemp(name)
            proto = os.path.join(ref.MODELS_DIR, NETS[name] + ".prototxt")
            model = d / f"{NETS[name]}.caffemodel"
            ref.random_caffemodel(proto, model, seed=0)
            made[name] = (proto, model, d)
        return made[name]

    return make


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
                                  for n in NETS])
def test_converted_model_matches_caffe(name, caffe_files):
    proto, model_file, d = caffe_files(name)
    x = images()
    logits_cv, probs_cv = ref.opencv_forward(proto, model_file, x.transpose(0, 3, 1, 2))
    perm = devkit_to_sorted()

    out = d / f"{name}-{keras.backend.backend()}.weights.h5"
    meta = convert(model_file, name, out)
    assert meta["class_order"] == "sorted" and meta["input"] == "caffe"
    logits = forward(senet.create_model(name, weights=out, classifier_activation=None), x)
    if name in FAST:  # the model's own softmax head (the same layer on every net)
        probs = forward(senet.create_model(name, weights=out), x)
    else:  # one build of a large net: the probabilities of its logits, in float64
        probs = softmax(logits.astype(np.float64))

    dp = np.abs(probs - probs_cv[:, perm]).max()
    dl = np.abs(logits - logits_cv[:, perm]).max()
    if RESULTS:
        with open(RESULTS, "a") as f:
            f.write(f"{name} {keras.backend.backend()} probs {dp:.2e} logits {dl:.2e} "
                    f"(logits range {logits_cv.min():.1f}..{logits_cv.max():.1f})\n")
    assert dp <= PROB_TOL, f"max |prob diff| {dp:.2e}"
    assert dl <= LOGIT_TOL, f"max |logit diff| {dl:.2e}"
    # The top classes must agree too, and differ between images (not a degenerate net).
    assert (logits.argmax(1) == logits_cv[:, perm].argmax(1)).all()


@pytest.mark.one_backend
def test_devkit_class_order_keeps_caffe_outputs(caffe_files, tmp_path):
    proto, model_file, _ = caffe_files("se_resnet50")
    x = images(2, seed=3)
    logits_cv, _ = ref.opencv_forward(proto, model_file, x.transpose(0, 3, 1, 2))
    out = tmp_path / "devkit.weights.h5"
    assert convert(model_file, "se_resnet50", out, class_order="devkit")["class_order"] == "devkit"
    model = senet.SEResNet50(weights=str(out), classifier_activation=None)
    assert model.senet_weights["class_order"] == "devkit"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), logits_cv, atol=LOGIT_TOL)


def test_odd_size_feature_maps_match_caffe(caffe_files):
    """At 193x257 the stem pool (ceil mode) and every stage match Caffe's sizes and values."""
    proto, model_file, d = caffe_files("se_resnet50")
    out = d / "features.weights.h5"
    convert(model_file, "se_resnet50", out)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 50, (1, 193, 257, 3)).astype("float32")
    pool1, conv5 = ref.opencv_outputs(proto, model_file, x.transpose(0, 3, 1, 2),
                                      ["pool1/3x3_s2", "conv5_3/relu"])
    model = senet.SEResNet50(weights=str(out), include_top=False, input_shape=(193, 257, 3))
    feats = keras.Model(model.inputs, [model.get_layer("pool1_3x3_s2").output, model.output])
    k_pool1, k_conv5 = (keras.ops.convert_to_numpy(t) for t in feats(x))
    assert k_pool1.shape == (1, 48, 64, 64) and k_conv5.shape == (1, 6, 8, 2048)
    np.testing.assert_allclose(k_pool1, pool1.transpose(0, 2, 3, 1), atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(k_conv5, conv5.transpose(0, 2, 3, 1), atol=1e-3, rtol=1e-4)
