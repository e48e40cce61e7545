"""The original TF1 port's checkpoints: written with TF 1.x names by tf.compat.v1's Saver,
converted without TensorFlow, they compute what Caffe computes (OpenCV as the reference)."""

import os

import numpy as np
import pytest

import senet
from senet.imagenet import devkit_to_sorted
from senet.conversion import convert

import caffe_reference as ref
from forward import forward

tf = pytest.importorskip("tensorflow")


def tf1_variables_from_caffe(caffe_layers):
    """The TF1 port's variables for a Caffe net: HWIO kernels, BN moments, `dense` classifier
    (devkit order, as in the port, which matched Caffe's outputs)."""
    by_name = {l.name: l for l in caffe_layers}
    out = {}
    for l in caffe_layers:
        if l.type == "Convolution":
            out[f"{l.name}/kernel"] = l.blobs[0].transpose(2, 3, 1, 0)
            if len(l.blobs) > 1:
                out[f"{l.name}/bias"] = l.blobs[1]
        elif l.type == "BatchNorm":
            f = l.blobs[2][0]
            scale = by_name[l.name + "/scale"].blobs
            out[f"{l.name}/gamma"], out[f"{l.name}/beta"] = scale[0], scale[1]
            out[f"{l.name}/moving_mean"] = l.blobs[0] / f
            out[f"{l.name}/moving_variance"] = l.blobs[1] / f
        elif l.type == "InnerProduct":
            out["dense/kernel"], out["dense/bias"] = l.blobs[0].T, l.blobs[1]
    return out


def save_tf1_checkpoint(prefix, arrays):
    with tf.Graph().as_default():
        variables = [tf.compat.v1.get_variable(k, initializer=v.astype("float32"))
                     for k, v in arrays.items()]
        step = tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver(variables + [step])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, prefix, global_step=0)


@pytest.mark.slow
def test_tf1_checkpoint_round_trips_to_caffe_outputs(tmp_path):
    proto = os.path.join(ref.MODELS_DIR, "SE-ResNet-50.prototxt")
    layers = ref.random_caffemodel(proto, tmp_path / "m.caffemodel", seed=0)
    prefix = save_tf1_checkpoint(str(tmp_path / "ckpt" / "model.ckpt"), tf1_variables_from_caffe(layers))

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 50, (2, 224, 224, 3)) * rng.uniform(0.5, 1.5, (2, 1, 1, 1))).astype("float32")
    logits_cv, _ = ref.opencv_forward(proto, tmp_path / "m.caffemodel", x.transpose(0, 3, 1, 2))

    # The checkpoint directory, the prefix and the .index file are all accepted.
    for src in (tmp_path / "ckpt", prefix, prefix + ".index"):
        out = tmp_path / "tf1.weights.h5"
        meta = convert(src, "se_resnet50", out)
        assert meta["source"]["kind"] == "tf1" and meta["class_order"] == "sorted"
    model = senet.SEResNet50(weights=str(out), classifier_activation=None)
    logits = forward(model, x)
    assert np.abs(logits - logits_cv[:, devkit_to_sorted()]).max() <= 1e-4


def test_tf1_checkpoint_of_another_architecture_is_refused(tmp_path):
    proto = os.path.join(ref.MODELS_DIR, "SE-ResNeXt-50.prototxt")
    layers = ref.random_caffemodel(proto, tmp_path / "x.caffemodel", seed=0)
    prefix = save_tf1_checkpoint(str(tmp_path / "model.ckpt"), tf1_variables_from_caffe(layers))
    with pytest.raises(ValueError, match="conv2_1_1x1_reduce.*wrong shapes|wrong shapes"):
        convert(prefix, "se_resnet50", tmp_path / "out.weights.h5")
    assert not (tmp_path / "out.weights.h5").exists()
