"""The OpenCV Caffe reference: Axpy rewrite, random well-scaled models, non-degenerate outputs."""

import os
import re
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import caffe_reference as ref  # noqa: E402
from senet.weights.caffe import (CaffeLayer, parse_prototxt, prototxt_layers,  # noqa: E402
                                 read_caffemodel, write_caffemodel)

FAST = ["SE-ResNet-50", "SE-BN-Inception"]
SLOW = ["SE-ResNet-101", "SE-ResNet-152", "SE-ResNeXt-50", "SE-ResNeXt-101", "SENet-154"]


def _proto(name):
    return os.path.join(ref.MODELS_DIR, name + ".prototxt")


def test_axpy_rewrite_matches_numpy(tmp_path):
    """Axpy(a, X, Y) == a * X + Y per sample and channel, with a batch of 2."""
    proto = tmp_path / "axpy.prototxt"
    proto.write_text('''name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 5 dim: 6 } } }
layer { name: "y" type: "Convolution" bottom: "data" top: "y"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "gp" type: "Pooling" bottom: "data" top: "gp"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "up" type: "Convolution" bottom: "gp" top: "up"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "prob" type: "Sigmoid" bottom: "up" top: "up" }
layer { name: "out" type: "Axpy" bottom: "up" bottom: "data" bottom: "y" top: "out" }
''')
    rng = np.random.default_rng(0)
    wy, by, wu, bu = (rng.normal(size=s).astype(np.float32) for s in [(4, 4, 1, 1), 4,
                                                                        (4, 4, 1, 1), 4])
    model = tmp_path / "axpy.caffemodel"
    write_caffemodel(model, [CaffeLayer("y", "Convolution", ["data"], ["y"], [wy, by]),
                             CaffeLayer("up", "Convolution", ["gp"], ["up"], [wu, bu])])
    text = ref.opencv_prototxt(proto)
    assert "Axpy" not in text
    assert len(prototxt_layers(parse_prototxt(text))) == 6 + 2
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    for fusion in (False, True):
        net = ref.opencv_net(proto, model, fusion=fusion)
        net.setInput(x)
        out = net.forward("out")
        y = np.einsum("oi,nihw->nohw", wy[:, :, 0, 0], x) + by[None, :, None, None]
        gate = 1 / (1 + np.exp(-(x.mean(axis=(2, 3)) @ wu[:, :, 0, 0].T + bu)))
        np.testing.assert_allclose(out, gate[:, :, None, None] * x + y, rtol=1e-5, atol=1e-5)


def test_opencv_prototxt_keeps_everything_else():
    proto = _proto("SE-ResNet-50")
    original = open(proto, encoding="utf-8").read()
    axpys = original.count('type: "Axpy"')
    assert axpys == 16
    text = ref.opencv_prototxt(proto)
    before, after = (prototxt_layers(parse_prototxt(t)) for t in (original, text))
    assert len(after) == len(before) + 2 * axpys
    assert not [l for l in after if l["type"] == ["Axpy"]]
    kept = [l for l in before if l["type"] != ["Axpy"]]
    assert [l for l in after if l in kept] == kept
    conv2_1 = [l for l in after if l["name"] == ["conv2_1"]][0]
    assert conv2_1["type"] == ["Eltwise"] and conv2_1["top"] == ["conv2_1"]
    assert conv2_1["bottom"][1] == "conv2_1_1x1_proj"
    resized = prototxt_layers(parse_prototxt(ref.opencv_prototxt(proto, input_hw=(193, 257))))
    assert resized[0]["input_param"][0]["shape"][0]["dim"] == [1, 3, 193, 257]
    # SE-BN-Inception already uses stock layers: nothing to rewrite.
    inception = _proto("SE-BN-Inception")
    assert ref.opencv_prototxt(inception) == open(inception, encoding="utf-8").read()


def test_random_caffemodel_shapes(tmp_path):
    path = tmp_path / "x50.caffemodel"
    written = ref.random_caffemodel(_proto("SE-ResNeXt-50"), path, seed=3)
    layers = {l.name: l for l in read_caffemodel(path)}
    assert len(layers) == len(prototxt_layers(parse_prototxt(_proto("SE-ResNeXt-50"))))
    assert layers["conv2_1_3x3"].blobs[0].shape == (128, 4, 3, 3)
    assert [b.shape for b in layers["conv2_1_1x1_down"].blobs] == [(16, 256, 1, 1), (16,)]
    assert [b.shape for b in layers["conv2_1_1x1_increase/bn"].blobs] == [(256,), (256,), (1,)]
    assert [b.shape for b in layers["conv2_1_1x1_increase/bn/scale"].blobs] == [(256,), (256,)]
    assert [b.shape for b in layers["classifier"].blobs] == [(1000, 2048), (1000,)]
    assert layers["conv2_1"].blobs == [] and layers["conv2_1"].type == "Axpy"
    factors = {float(l.blobs[2][0]) for l in layers.values() if l.type == "BatchNorm"}
    assert 1.0 not in factors and len(factors) > 1
    params = sum(b.size for l in layers.values() for b in l.blobs if l.type != "BatchNorm")
    assert params == 27_559_896  # the README's trainable parameter count
    for a, b in zip(written, layers.values()):
        assert all(np.array_equal(x, y) for x, y in zip(a.blobs, b.blobs))


def _check_forward(name, tmp_path):
    proto, model = _proto(name), tmp_path / f"{name}.caffemodel"
    ref.random_caffemodel(proto, model, seed=0)
    images = np.random.default_rng(1).normal(0, 50, (2, 3, 224, 224)).astype(np.float32)
    start = time.perf_counter()
    logits, probs = ref.opencv_forward(proto, model, images)
    seconds = time.perf_counter() - start
    assert logits.shape == probs.shape == (2, 1000)
    assert logits.dtype == probs.dtype == np.float32
    assert np.isfinite(logits).all() and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert probs.max() < 0.999  # not saturated
    assert logits.std(axis=1).min() > 0.1  # varies across classes
    assert logits.std(axis=0).mean() > 0.01  # varies across images
    assert np.abs(logits).max() < 50
    print(f"{name}: logits [{logits.min():.2f}, {logits.max():.2f}], std {logits.std():.2f}, "
          f"max prob {probs.max():.3f}, load + forward {seconds:.2f}s")
    return proto, model, images, logits


@pytest.mark.parametrize("name", FAST)
def test_opencv_forward(name, tmp_path):
    proto, model, images, logits = _check_forward(name, tmp_path)
    single, _ = ref.opencv_forward(proto, model, images[1:])
    np.testing.assert_allclose(single[0], logits[1], rtol=1e-4, atol=1e-4)
    fused = ref.opencv_net(proto, model, input_hw=(224, 224), fusion=True)
    fused_logits, _ = ref.opencv_forward(proto, model, images, net=fused)
    np.testing.assert_allclose(fused_logits, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_opencv_forward_large(name, tmp_path):
    _check_forward(name, tmp_path)


def test_all_official_prototxts_are_covered():
    names = sorted(re.sub(r"\.prototxt$", "", f) for f in os.listdir(ref.MODELS_DIR)
                   if f.endswith(".prototxt"))
    assert names == sorted(FAST + SLOW)


def test_opencv_outputs_at_odd_size(tmp_path):
    """Truncated nets run at sizes where the 7x7 head pool cannot; pooling rounds up."""
    proto, model = _proto("SE-ResNet-50"), tmp_path / "r50.caffemodel"
    ref.random_caffemodel(proto, model)
    images = np.random.default_rng(2).normal(0, 50, (1, 3, 193, 257)).astype(np.float32)
    pool1, conv5 = ref.opencv_outputs(proto, model, images, ["pool1/3x3_s2", "conv5_3/relu"])
    assert pool1.shape == (1, 64, 48, 64)  # ceil mode: 'same' padding would give 49x65
    assert conv5.shape == (1, 2048, 6, 8)
    assert np.isfinite(conv5).all() and conv5.min() >= 0 and conv5.std() > 0
    with pytest.raises(ValueError, match="no layers named"):
        ref.opencv_outputs(proto, model, images, ["nope"])
