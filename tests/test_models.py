"""Every variant on the current backend: build, parameter counts, shapes, pooling, bad arguments.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch); `.ci/run` does all three.
"""

import numpy as np
import pytest

import keras
import senet
from senet.variants import VARIANTS

pytestmark = pytest.mark.backends

SMALL = ["se_resnet18", "se_resnet34", "se_resnet50", "se_resnext26_32x4d",
         "se_resnext50_32x4d", "se_bn_inception"]
LARGE = ["se_resnet101", "se_resnet152", "se_resnext101_32x4d", "senet154"]
# Channels of the stride-4/8/16/32 feature maps.
FEATURE_CHANNELS = {
    "basic": (64, 128, 256, 512),
    "bottleneck": (256, 512, 1024, 2048),
    "inception": (192, 320, 608, 1024),
}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def feature_channels(name):
    v = VARIANTS[name]
    return FEATURE_CHANNELS["inception" if v.family == "inception" else v.block]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_count_is_the_official_one(name):
    # The table holds the official counts (reference README) and, for timm's three extra
    # variants, timm's; test_timm.py checks those against timm itself.
    assert trainable(senet.create_model(name)) == VARIANTS[name].params


@pytest.mark.parametrize("name", list(VARIANTS))
def test_constructor_and_create_model_agree(name):
    v = VARIANTS[name]
    ctor = getattr(senet, v.constructor)
    model = ctor(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert model.name == name
    assert model.output_shape == (None, feature_channels(name)[-1])


@pytest.mark.parametrize("name", SMALL)
def test_classifier_forward_224(name):
    model = senet.create_model(name)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 1000)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_odd_input_size_features_and_pooling(name):
    # 193x257: Caffe's ceil-mode pool gives 97x129 -> 48x64 after the stem (the reference
    # README), so the stride-4/8/16/32 maps are 48x64, 24x32, 12x16, 6x8.
    x = np.random.default_rng(1).normal(size=(1, 193, 257, 3)).astype("float32")
    feats = senet.create_model(name, features_only=True, input_shape=(193, 257, 3))
    outs = [keras.ops.convert_to_numpy(t) for t in feats(x, training=False)]
    sizes = [(48, 64), (24, 32), (12, 16), (6, 8)]
    assert [o.shape for o in outs] == [(1, h, w, c) for (h, w), c in
                                       zip(sizes, feature_channels(name))]
    assert all(np.isfinite(o).all() for o in outs)

    c = feature_channels(name)[-1]
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        m = senet.create_model(name, include_top=False, pooling=pooling, input_shape=(None, None, 3))
        m.set_weights(feats.get_weights())
        pooled = keras.ops.convert_to_numpy(m(x, training=False))
        assert pooled.shape == (1, c)
        np.testing.assert_allclose(pooled, reduce(outs[-1], axis=(1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["se_resnet50", "se_bn_inception"])
def test_smallest_and_non_square_inputs(name):
    for shape, final in (((32, 32, 3), (1, 1)), ((32, 96, 3), (1, 3)), ((224, 160, 3), (7, 5))):
        m = senet.create_model(name, include_top=False, input_shape=shape)
        assert m.output_shape[1:3] == final, shape


@pytest.mark.parametrize("name", LARGE)
def test_large_variant_small_forward(name):
    model = senet.create_model(name, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    y = keras.ops.convert_to_numpy(model(np.ones((1, 64, 64, 3), "float32"), training=False))
    assert y.shape == (1, 2048) and np.isfinite(y).all()


def test_dropout_only_in_senet154():
    assert [l.rate for l in senet.SENet154(input_shape=(64, 64, 3)).layers
            if isinstance(l, keras.layers.Dropout)] == [0.2]
    assert not any(isinstance(l, keras.layers.Dropout) for l in senet.SEResNet50().layers)


@pytest.mark.parametrize("name", ["se_resnext26_32x4d", "se_bn_inception"])
def test_channels_first_computes_the_same(name, channels_first):
    """A channels_first model with the same weights gives the same outputs (transposed)."""
    x = np.random.default_rng(2).normal(size=(1, 3, 64, 96)).astype("float32")
    first = senet.create_model(name, include_top=False, input_shape=(3, 64, 96))
    weights = first.get_weights()
    y_first = keras.ops.convert_to_numpy(first(x, training=False))
    assert y_first.shape[1] == feature_channels(name)[-1]
    keras.config.set_image_data_format("channels_last")
    last = senet.create_model(name, include_top=False, input_shape=(64, 96, 3))
    last.set_weights(weights)
    y_last = keras.ops.convert_to_numpy(last(x.transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(y_first.transpose(0, 2, 3, 1), y_last, rtol=1e-4, atol=1e-4)


def test_input_tensor_is_used():
    inp = keras.Input((96, 96, 3), name="img")
    model = senet.SEResNet18(include_top=False, input_tensor=inp, pooling="max")
    assert model.inputs[0] is inp or model.inputs[0].name == inp.name
    assert model.output_shape == (None, 512)


def test_classes_and_logits():
    model = senet.SEResNet18(classes=10, classifier_activation=None, input_shape=(64, 64, 3))
    y = keras.ops.convert_to_numpy(model(np.ones((1, 64, 64, 3), "float32")))
    assert y.shape == (1, 10) and not np.allclose(y.sum(), 1.0)


def test_layer_names_follow_the_official_prototxt():
    names = {l.name for l in senet.SEResNeXt50().layers}
    for n in ["conv1_7x7_s2", "conv1_7x7_s2_bn", "conv2_1_1x1_reduce_bn", "conv3_1_3x3",
              "conv3_1_1x1_proj", "conv5_3_1x1_up", "conv4_6_1x1_down", "classifier"]:
        assert n in names
    names = {l.name for l in senet.SENet154(input_shape=(64, 64, 3)).layers}
    assert {"conv1_1_3x3_s2", "conv1_3_3x3_bn", "conv5_1_1x1_proj"} <= names
    names = {l.name for l in senet.SEBNInception().layers}
    assert {"inception_3a_1x1", "inception_5b_double3x3b_bn", "inception_4e_1x1_up"} <= names


BAD_ARGUMENTS = [
    (dict(weights="no/such/file.weights.h5"), "does not exist"),
    (dict(weights=3), "weights"),
    (dict(weights="imagenet", classes=10), "classes"),
    (dict(pooling="sum", include_top=False), "pooling"),
    (dict(classes=0), "classes"),
    (dict(include_top="yes"), "include_top"),
    (dict(input_shape=(16, 16, 3), include_top=False), "at least 32"),
    (dict(input_shape=(224, 224)), "3 dimensions"),
    (dict(classifier_activation="no_such_activation"), "classifier_activation"),
    (dict(weights="imagenet", input_shape=(224, 224, 1), include_top=False), "3 input channels"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_bad_arguments_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        senet.SEResNet18(**kwargs)


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match="Did you mean 'se_resnet50'"):
        senet.create_model("se_resnet5")
    with pytest.raises(ValueError, match="Available models"):
        senet.create_model("vgg16")
    assert senet.create_model("SEResNet18", include_top=False).name == "se_resnet18"


def test_list_models():
    assert senet.list_models() == list(VARIANTS)
    assert len(senet.list_models()) == 10


def test_saved_keras_model_reloads_with_grouped_convs(tmp_path):
    model = senet.create_model("se_resnext26_32x4d", include_top=False, input_shape=(64, 64, 3))
    assert any(type(l).__name__ == "GroupedConv2D" for l in model.layers)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_keras_weights_file_from_save_weights_loads(tmp_path):
    """A file from `model.save_weights` (e.g. after fine-tuning) is a valid `weights=`."""
    model = senet.SEResNet18(classes=7, input_shape=(64, 64, 3))
    path = str(tmp_path / "tuned.weights.h5")
    model.save_weights(path)
    again = senet.SEResNet18(classes=7, input_shape=(64, 64, 3), weights=path)
    x = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-6)
