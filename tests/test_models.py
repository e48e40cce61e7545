"""Every architecture on the current backend: the full-size nets built once each (parameter
counts, multiply-adds, output shapes, layer names), the block kinds exercised on tiny rows
(`senet.variants.tiny`: one unit per stage, narrow widths) at odd sizes, and the arguments.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch); `tests/run.sh` does all three.
"""

import numpy as np
import pytest

import keras
import senet
from senet import bench
from senet.blocks import weights_to_come
from senet.variants import VARIANTS, tiny

pytestmark = pytest.mark.backends

BIG = {"se_resnet101", "se_resnet152", "se_resnext101_32x4d", "senet154", "seresnet152d",
       "seresnext101_32x4d", "seresnext101_64x4d", "seresnext101_32x8d", "seresnext101d_32x8d",
       "seresnextaa101d_32x8d", "seresnextaa201d_32x8d", "gluon_senet154"}
RESIDUAL = [n for n, v in VARIANTS.items() if v.family == "resnet"]


def out_channels(v):
    """Channels of the stride-4/8/16/32 feature maps of a row."""
    if v.family == "inception":
        return (192, 320, 608, 1024)
    return tuple(v.widths[-1] * 2**i for i in range(4))


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _full_size_cases():
    for name in VARIANTS:
        yield pytest.param(name, marks=pytest.mark.slow if name in BIG else (), id=name)


@pytest.mark.parametrize("name", list(_full_size_cases()))
def test_full_size_net(name):
    """Built once: parameters (official / timm's), multiply-adds (the table's), shapes, names.
    Only shapes are checked, so kernels start as zeros (on JAX each random kernel shape
    compiles a program first: SE-BN-Inception's case took 14 s alone on JAX, now 3 s)."""
    v = VARIANTS[name]
    with weights_to_come():
        model = senet.create_model(name)
    assert trainable(model) == v.params
    assert bench.macs(model) == v.macs
    assert model.output_shape == (None, 1000) and model.input_shape == (None, 224, 224, 3)
    names = {l.name for l in model.layers}
    if v.family == "inception":
        assert {"inception_3a_1x1", "inception_5b_double3x3b_bn", "inception_4e_1x1_up"} <= names
    else:
        last = f"conv5_{v.depths[-1]}"
        assert {f"{last}_1x1_up", f"{last}_1x1_down", "conv3_1_1x1_proj", "classifier"} <= names
        assert ("conv1_7x7_s2" in names) == (len(v.stem) == 1)
    if v.constructor:  # the keras.applications-style constructor builds the same net
        ctor = getattr(senet, v.constructor)
        assert ctor.__name__ == v.constructor and "Instantiate" in ctor.__doc__


@pytest.mark.parametrize("name", RESIDUAL)
def test_tiny_row_every_block_kind(name):
    """A tiny copy of each row at an odd size: features at strides 4..32, pooled heads agree."""
    v = tiny(name)
    x = np.random.default_rng(1).normal(size=(1, 97, 129, 3)).astype("float32")
    feats = senet.build(v, features_only=True, input_shape=(97, 129, 3))
    outs = [keras.ops.convert_to_numpy(t) for t in feats(x, training=False)]
    # The stem conv gives 49x65; Caffe's ceil pool and the anti-aliased 2x2 average pool 24x32,
    # PyTorch's padded pool 25x33; each later stage halves, rounding up.
    h, w = (25, 33) if v.stem_pool == "pad" else (24, 32)
    sizes = [(-(-h // 2**i), -(-w // 2**i)) for i in range(4)]
    assert [o.shape[1:3] for o in outs] == sizes
    assert [o.shape[-1] for o in outs] == list(out_channels(v))
    assert all(np.isfinite(o).all() for o in outs) and outs[-1].std() > 0
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        m = senet.build(v, include_top=False, pooling=pooling, input_shape=(None, None, 3))
        m.set_weights(feats.get_weights())
        pooled = keras.ops.convert_to_numpy(m(x, training=False))
        np.testing.assert_allclose(pooled, reduce(outs[-1], axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_odd_sizes_follow_caffe_and_pytorch_rounding():
    # 193x257: Caffe's ceil-mode pool gives 97x129 -> 48x64 after the stem (the reference
    # README); PyTorch's padded pool gives 49x65.
    x = np.zeros((1, 193, 257, 3), "float32")
    for name, size in (("se_resnet50", (48, 64)), ("seresnet50", (49, 65)),
                       ("seresnextaa101d_32x8d", (48, 64))):
        feats = senet.build(tiny(name), features_only=True, input_shape=(193, 257, 3))
        assert feats(x)[0].shape[1:3] == size, name


@weights_to_come()  # shapes only: zero kernels, no random draws
def test_se_bn_inception_small_and_odd_inputs():
    for shape, final in (((32, 32, 3), (1, 1)), ((32, 96, 3), (1, 3)), ((224, 160, 3), (7, 5))):
        m = senet.create_model("se_bn_inception", include_top=False, input_shape=shape)
        assert m.output_shape[1:3] == final, shape
    feats = senet.create_model("se_bn_inception", features_only=True, input_shape=(193, 257, 3))
    assert [tuple(s[1:]) for s in feats.output_shape] == [
        (48, 64, 192), (24, 32, 320), (12, 16, 608), (6, 8, 1024)]


def test_classifier_forward_softmax():
    model = senet.build(tiny("seresnext26d_32x4d"), classes=7, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@weights_to_come()
def test_dropout_only_where_the_reference_has_it():
    assert [l.rate for l in senet.build(tiny("senet154")).layers
            if isinstance(l, keras.layers.Dropout)] == [0.2]
    assert not any(isinstance(l, keras.layers.Dropout)
                   for l in senet.build(tiny("gluon_senet154")).layers)


@pytest.mark.parametrize("name", ["se_resnext26_32x4d", "seresnextaa101d_32x8d"])
def test_channels_first_computes_the_same(name, channels_first):
    """A channels_first model with the same weights gives the same outputs (transposed)."""
    x = np.random.default_rng(2).normal(size=(1, 3, 64, 96)).astype("float32")
    first = senet.build(tiny(name), include_top=False, input_shape=(3, 64, 96))
    weights = first.get_weights()
    y_first = keras.ops.convert_to_numpy(first(x, training=False))
    keras.config.set_image_data_format("channels_last")
    last = senet.build(tiny(name), include_top=False, input_shape=(64, 96, 3))
    last.set_weights(weights)
    y_last = keras.ops.convert_to_numpy(last(x.transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(y_first.transpose(0, 2, 3, 1), y_last, rtol=1e-4, atol=1e-4)


@weights_to_come()
def test_input_tensor_is_used():
    inp = keras.Input((96, 96, 3), name="img")
    model = senet.SEResNet18(include_top=False, input_tensor=inp, pooling="max")
    assert model.inputs[0] is inp or model.inputs[0].name == inp.name
    assert model.output_shape == (None, 512)


def test_classes_and_logits():
    model = senet.SEResNet18(classes=10, classifier_activation=None, input_shape=(64, 64, 3))
    y = keras.ops.convert_to_numpy(model(np.ones((1, 64, 64, 3), "float32")))
    assert y.shape == (1, 10) and not np.allclose(y.sum(), 1.0)


BAD_ARGUMENTS = [
    (dict(weights="no/such/file.weights.h5"), "no such weights file"),
    (dict(weights=3), "weights"),
    (dict(pooling="sum", include_top=False), "pooling"),
    (dict(classes=0), "classes"),
    (dict(include_top="yes"), "include_top"),
    (dict(input_shape=(16, 16, 3), include_top=False), "at least 32"),
    (dict(input_shape=(224, 224)), "3 dimensions"),
    (dict(classifier_activation="no_such_activation"), "classifier_activation"),
    (dict(weights="imagenet", input_shape=(224, 224, 1), include_top=False), "3 input channels"),
    (dict(weights="in1k", classifier_activation="relu"), "classifier_activation"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_bad_arguments_are_rejected_clearly(kwargs, message, home):
    with pytest.raises(ValueError, match=message):
        senet.SEResNet18(**kwargs)


@weights_to_come()
def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match="Did you mean 'se_resnet50'"):
        senet.create_model("se_resnet5")
    with pytest.raises(ValueError, match="senet list"):
        senet.create_model("vgg16")
    assert senet.create_model("SEResNet18", include_top=False).name == "se_resnet18"
    assert senet.create_model("legacy_seresnet18", include_top=False).name == "se_resnet18"


def test_list_models():
    assert senet.list_models() == list(VARIANTS)
    assert "seresnextaa201d_32x8d.sw_in12k_ft_in1k_384" in senet.list_models(pretrained=True)
    assert "se_bn_inception.caffe_in1k" not in senet.list_models(pretrained=True)


def test_saved_keras_model_reloads_with_grouped_convs(tmp_path):
    model = senet.build(tiny("seresnextaa101d_32x8d"), include_top=False, input_shape=(64, 64, 3))
    from senet.blocks import Conv2D

    assert any(isinstance(l, Conv2D) and l.groups > 1 for l in model.layers)
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


def test_loaded_kernels_are_the_files_and_a_new_head_starts_random(tmp_path, monkeypatch):
    """With weights, convolutions are built as zeros (not drawn: the file replaces them);
    the classifier of a fine-tuning model (other classes) is still drawn at random, and the
    layers' configs keep their real initializers."""
    from senet.weights import native

    source = senet.SEResNet18(classes=7, input_shape=(64, 64, 3))
    path = tmp_path / "seven.weights.h5"
    native.save(path, {l.name: l.get_weights() for l in source.layers if l.weights},
                {"model": "se_resnet18", "classes": 7, "input": "caffe"})
    drawn = []
    draw = keras.initializers.GlorotUniform.__call__
    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__",
                        lambda self, shape, *a, **k: drawn.append(tuple(shape)) or
                        draw(self, shape, *a, **k))
    tuned = senet.SEResNet18(classes=3, input_shape=(64, 64, 3), weights=str(path))
    assert drawn == [(512, 3)]  # the new classifier only
    kernels = [(a, b) for a, b in zip(source.layers, tuned.layers)
               if isinstance(b, keras.layers.Conv2D)]
    assert len(kernels) > 20
    for a, b in kernels:
        assert a.get_weights()[0].std() > 0  # without weights: drawn
        np.testing.assert_array_equal(b.get_weights()[0], a.get_weights()[0])
        assert b.get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    head = keras.ops.convert_to_numpy(tuned.get_layer("classifier").kernel)
    assert head.shape == (512, 3) and head.std() > 0.01


def _build_mixed(variant, **kwargs):
    """`senet.build` under Keras' mixed bfloat16 policy (the global policy restored)."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return senet.build(variant, **kwargs)
    finally:
        keras.config.set_dtype_policy("float32")


def _move_batchnorms(model, rng):
    """BatchNorm statistics and scales away from their initial 0 / 1, so that an engine that
    folds or freezes them wrongly shows it."""
    model.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype("float32")
                       if v.path.endswith(("variance", "gamma")) else
                       w + rng.normal(0, 0.3, w.shape).astype("float32")
                       if v.path.endswith(("mean", "beta")) else w
                       for v, w in zip(model.weights, model.get_weights())])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's path")
def test_keras_engine_forward_on_tensorflow_equals_the_model(monkeypatch):
    """The Keras engine on TensorFlow runs the model as one graph with its weights frozen in
    and each BatchNorm folded into its conv (no BatchNorm arithmetic left in the graph): the
    model's logits up to float32 rounding, at batch 1 and 3, for weights set after the build
    (the graph holds the weights of when it was made); a mixed bfloat16 model the same way,
    within bfloat16's precision of the float32 model and of Keras' own mixed forward; a
    model of several outputs; and, where the folded trace fails, the unfolded graph."""
    from senet import engines

    rng = np.random.default_rng(4)
    model = senet.build(tiny("se_resnext26_32x4d"), input_shape=(64, 96, 3), classes=5,
                        classifier_activation=None)
    _move_batchnorms(model, rng)
    forward = engines._tf_forward(model)

    def ops(f):
        return {n.op for n in f.function.graph.as_graph_def().node}

    assert "Rsqrt" in ops(engines._tf_forward(model, fold=False))  # a BatchNorm's
    assert "Rsqrt" not in ops(forward) and "BiasAdd" in ops(forward)
    for batch in (1, 3):
        x = rng.normal(size=(batch, 64, 96, 3)).astype("float32")
        want = keras.ops.convert_to_numpy(model(x, training=False))
        got = keras.ops.convert_to_numpy(forward(x))
        assert got.shape == want.shape == (batch, 5) and want.std() > 0.1
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    mixed = _build_mixed(tiny("se_resnext26_32x4d"), input_shape=(64, 96, 3), classes=5,
                         classifier_activation=None)
    mixed.set_weights(model.get_weights())
    folded = engines._tf_forward(mixed)
    assert "Rsqrt" not in ops(folded)
    got = np.asarray(folded(x), "float32")
    scale = float(np.abs(want).max())
    assert np.abs(got - want).max() <= 0.05 * scale
    assert np.abs(got - want).max() > 1e-6  # computed in bfloat16 indeed
    keras_mixed = np.asarray(mixed(x, training=False), "float32")
    assert np.abs(got - keras_mixed).max() <= 0.05 * scale
    # several outputs (feature maps), folded too
    features = senet.build(tiny("se_resnext26_32x4d"), input_shape=(64, 96, 3),
                           features_only=True)
    _move_batchnorms(features, rng)
    forward = engines._tf_forward(features)
    assert "Rsqrt" not in ops(forward)
    got, want = forward(x), features(x, training=False)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        g, w = keras.ops.convert_to_numpy(g), keras.ops.convert_to_numpy(w)
        assert g.shape == w.shape and w.std() > 0.1
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, float(np.abs(w).max()))
    # where the folded trace fails (Keras' internals moved), the unfolded frozen graph
    monkeypatch.setattr(engines, "_tf_conv", lambda *a, **k: 1 / 0)
    forward = engines._tf_forward(features)
    assert "Rsqrt" in ops(forward)
    for g, w in zip(forward(x), want):
        assert np.abs(keras.ops.convert_to_numpy(g) - keras.ops.convert_to_numpy(w)).max() \
            <= 1e-5 * max(1.0, float(np.abs(keras.ops.convert_to_numpy(w)).max()))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
@pytest.mark.parametrize("kernel,strides,padding", [(1, 1, "valid"), (1, 2, "same"),
                                                    (3, 1, "same"), (3, 2, "valid"),
                                                    (3, 2, "same"), (4, 3, "same"),
                                                    (7, 2, "valid")])
def test_jax_conv_in_bfloat16_is_one_product_into_float32(kernel, strides, padding):
    """A dense conv under a mixed bfloat16 policy on JAX: one matrix product of bfloat16
    operands (each output pixel's window against the kernel) with a float32 result, XLA:CPU's
    fast form, rounded to bfloat16 once; within that one rounding (and the operands') of the
    float32 layer, for Keras' windows and padding (the uneven 'same' too). In float32 only
    the 1x1 conv is a product; larger windows stay XLA's convolution, and their gradient is
    the convolution's in bfloat16 too (Keras' layer's, exactly)."""
    import re

    import jax

    from senet.blocks import Conv2D

    x = np.random.default_rng(0).normal(size=(2, 11, 10, 8)).astype("float32")
    ref = Conv2D(16, kernel, strides=strides, padding=padding, use_bias=False, dtype="float32")
    layer = Conv2D(16, kernel, strides=strides, padding=padding, use_bias=False,
                   dtype="mixed_bfloat16")
    want = keras.ops.convert_to_numpy(ref(x))
    layer.build(x.shape)
    layer.set_weights(ref.get_weights())
    got = layer(x)
    size = [(-(-n // strides) if padding == "same" else (n - kernel) // strides + 1)
            for n in (11, 10)]
    assert got.dtype == "bfloat16" and got.shape == want.shape == (2, *size, 16)
    got = np.asarray(got, "float32")
    assert np.abs(got - want).max() <= 2 ** -6 * np.abs(want).max() and not np.allclose(got, want)

    def ops(layer):
        hlo = jax.jit(layer).lower(x).as_text()
        return (re.findall(r"stablehlo\.dot_general .*-> tensor<([0-9x]+)x(\w+)>", hlo),
                hlo.count("stablehlo.convolution"))

    assert ops(layer) == ([(f"{2 * size[0] * size[1]}x16", "f32")], 0)
    assert ops(ref) == (([(f"{2 * size[0] * size[1]}x16", "f32")], 0) if kernel == 1 else
                        ([], 1))
    if kernel > 1:  # the gradient is XLA's convolution's, as for Keras' own layer
        keras_layer = keras.layers.Conv2D(16, kernel, strides=strides, padding=padding,
                                          use_bias=False, dtype="mixed_bfloat16")
        keras_layer.build(x.shape)
        dy = np.random.default_rng(1).normal(size=(2, *size, 16)).astype("float32")

        def grads(layer):
            model = keras.Sequential([keras.Input(x.shape[1:]), layer])  # calls it as Keras does

            def loss(k, x):
                y = model.stateless_call([k], [], x)[0]
                return jax.numpy.sum(y.astype("float32") * dy)

            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            hlo = grad.lower(ref.kernel.value, x).as_text()
            return grad(ref.kernel.value, x), hlo.count("stablehlo.convolution")

        (ours, convs), (keras_grads, keras_convs) = grads(layer), grads(keras_layer)
        assert convs == keras_convs >= 2  # the backward's convolutions, not the copies'
        for a, b in zip(ours, keras_grads):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2 ** -7, atol=1e-3)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
@pytest.mark.parametrize("batch,per", [(6, 2), (5, 1), (2, 2)])
def test_jax_conv_windows_are_copied_a_few_images_at_a_time(monkeypatch, batch, per):
    """In bfloat16 a conv's windows (kh*kw times its input) are copied out and multiplied a
    group of images at a time, one group after another, within `blocks.WINDOWS_BYTES`;
    the output is the same as from the whole batch's windows at once. `per` images fit
    (the largest divisor of the batch within the bound; all of them: no loop)."""
    import re

    import jax

    from senet import blocks

    x = np.random.default_rng(0).normal(size=(batch, 11, 10, 8)).astype("float32")
    layer = blocks.Conv2D(16, 3, padding="same", use_bias=False, dtype="mixed_bfloat16")
    layer.build(x.shape)
    image = 2 * 9 * 8 * 11 * 10  # one image's windows: bfloat16, 3x3x8 values per pixel
    monkeypatch.setattr(blocks, "WINDOWS_BYTES", 1 << 40)
    whole = np.asarray(layer(x), "float32")
    monkeypatch.setattr(blocks, "WINDOWS_BYTES", 2 * image + image // 2)
    hlo = jax.jit(layer).lower(x).as_text()
    assert re.findall(r"stablehlo\.dot_general .*-> tensor<(\d+)x16xf32>", hlo) == \
        [str(per * 110)]
    assert ("stablehlo.while" in hlo) == (per < batch)
    got = np.asarray(layer(x), "float32")
    assert got.shape == (batch, 11, 10, 16) and got.std() > 0.1
    np.testing.assert_array_equal(got, whole)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_jax_forms_only_where_jax_compiles_for_the_cpu(monkeypatch, platform):
    """The JAX forms of convs and pools were chosen on XLA:CPU's kernels. Where JAX compiles
    for an accelerator, each layer lowers to Keras' own op (a convolution, the grouped one
    with its groups, a reduce-window), as Keras' own layer does."""
    import jax

    from senet import blocks

    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 8)).astype("float32")
    layers = {"1x1": blocks.Conv2D(8, 1, use_bias=False),
              "grouped": blocks.Conv2D(8, 3, groups=4, padding="same", use_bias=False),
              "bfloat16 3x3": blocks.Conv2D(8, 3, use_bias=False, dtype="mixed_bfloat16"),
              "pool": blocks.MaxPooling2D(3, 2)}
    keras_ops = {"1x1": (1, False, False), "grouped": (1, True, False),
                 "bfloat16 3x3": (1, False, False), "pool": (0, False, True)}
    senet_ops = {"1x1": (0, False, False), "grouped": (1, False, False),  # one dense chunk
                 "bfloat16 3x3": (0, False, False), "pool": (0, False, False)}
    for name, layer in layers.items():
        hlo = jax.jit(layer).lower(x).as_text()
        ops = (hlo.count("stablehlo.convolution"), "feature_group_count = 4" in hlo,
               "reduce_window" in hlo)
        assert ops == (senet_ops if platform == "cpu" else keras_ops)[name], name


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_jax_max_pool_is_a_maximum_of_slices_with_keras_gradient(dtype):
    """senet's MaxPooling2D on JAX: the maximum of the window's strided slices (no
    reduce-window in the forward), Keras' values exactly, and Keras' gradient exactly, ties
    included (the reduce-window's gradient gives a tie's whole cotangent to one input)."""
    import jax

    from senet.blocks import MaxPooling2D

    x = np.round(np.random.default_rng(0).normal(size=(2, 13, 12, 5)), 1).astype("float32")
    ours = MaxPooling2D(3, strides=2, dtype=dtype)
    theirs = keras.layers.MaxPooling2D(3, strides=2, dtype=dtype)
    assert np.array_equal(np.asarray(ours(x), "float32"), np.asarray(theirs(x), "float32"))
    assert ours(x).shape == (2, 6, 5, 5)
    assert "reduce_window" not in jax.jit(ours).lower(x).as_text()
    dy = np.random.default_rng(1).normal(size=(2, 6, 5, 5)).astype("float32")

    def grad(layer):
        model = keras.Sequential([keras.Input(x.shape[1:]), layer])

        def loss(x):
            return jax.numpy.sum(model.stateless_call([], [], x)[0].astype("float32") * dy)

        return np.asarray(jax.jit(jax.grad(loss))(x))

    want = grad(theirs)
    assert np.count_nonzero(want) < x.size / 2  # ties: one input of each window takes it all
    np.testing.assert_array_equal(grad(ours), want)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
def test_keras_engine_on_jax_cuts_long_stages_into_programs():
    """The Keras engine on JAX compiles a float32 stage longer than `units` residual units as
    several programs, cut at every `units`-th unit's output: the model's outputs. The
    reason, checked on the compiled programs: compiled whole, XLA fuses the residual sums of
    a whole stage into one computation (it stores no unit's output); cut, no fusion spans
    more than `units` units. Should XLA stop doing that, the contrast fails and the cut is
    no longer needed. Mixed bfloat16 (where XLA stores the sums) and short stages: one
    program, Keras' own."""
    import re

    import jax

    from senet import engines

    def longest_chain(part):
        args = ([v.value for v in part.trainable_variables],
                [v.value for v in part.non_trainable_variables],
                np.zeros((2, *part.inputs[0].shape[1:]), "float32"))
        hlo = jax.jit(lambda t, o, x: part.stateless_call(t, o, x, training=False)[0]) \
            .lower(*args).compile().as_text()
        bodies = re.findall(r"\n%fused_computation[.\d]* (.*?)\n}", hlo, re.S)
        return max(len(set(re.findall(r'op_name="[^"]*/(conv\d+_\d+)_relu/', b))) for b in bodies)

    rng = np.random.default_rng(6)
    variant = tiny("senet154", depths=(1, 1, 7, 1))
    model = senet.build(variant, input_shape=(64, 64, 3), classes=5, classifier_activation=None)
    _move_batchnorms(model, rng)
    assert engines._jax_forward(model) is None  # 7 units: one program, as Keras runs it
    forward = engines._jax_forward(model, units=3)
    assert [p.layers[-1].name for p in forward.parts[:-1]] == ["conv4_3_relu", "conv4_6_relu"]
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    want = np.asarray(model.predict_on_batch(x))
    got = np.asarray(forward(x))
    assert got.shape == want.shape == (2, 5) and want.std() > 0.1
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    whole, parts = longest_chain(model), [longest_chain(p) for p in forward.parts]
    assert whole >= 7 and max(parts) <= 3, (whole, parts)
    mixed = _build_mixed(variant, input_shape=(64, 64, 3), classes=5)
    assert len(engines._jax_forward(mixed, units=3).parts) == 1


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's path")
def test_keras_engine_on_jax_feeds_a_mixed_model_its_kernels_cast_once():
    """A mixed-bfloat16 model on the JAX engine: one program, called with the kernels already
    in bfloat16 (BatchNorm's statistics and scales in float32, as Keras uses them), so the
    compiled program converts fewer weights than Keras' (the reason: it converted them all
    at each call); Keras' outputs; the cast kept between calls, and redone when the weights
    change."""
    import re

    import jax

    from senet import engines

    rng = np.random.default_rng(7)
    model = _build_mixed(tiny("se_resnext26_32x4d"), input_shape=(64, 64, 3), classes=5,
                         classifier_activation=None)
    _move_batchnorms(model, rng)
    forward = engines._jax_forward(model)
    assert forward.parts == [model]
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    want = np.asarray(model.predict_on_batch(x), "float32")
    assert want.std() > 0.1 and np.abs(np.asarray(forward(x), "float32") - want).max() \
        <= 2 ** -7 * np.abs(want).max()

    weights = engines._jax_weights(model, model.trainable_variables)
    values = weights()
    dtypes = {v.path.split("/")[-1]: str(value.dtype)
              for v, value in zip(model.trainable_variables, values)}
    assert dtypes["kernel"] == "bfloat16" and dtypes["gamma"] == dtypes["beta"] == "float32"
    first = next(i for i, value in enumerate(values) if str(value.dtype) == "bfloat16")
    assert weights()[first] is values[first]  # cast once

    def converts(trainable):
        other = [v.value for v in model.non_trainable_variables]
        hlo = jax.jit(lambda t, o, x: model.stateless_call(t, o, x, training=False)[0]) \
            .lower(trainable, other, x).compile().as_text()
        return len(re.findall(r" convert\(", hlo))

    kernels = sum(str(v.dtype) == "bfloat16" for v in values)
    assert converts(values) + kernels <= converts([v.value for v in model.trainable_variables])

    model.set_weights([w * 1.5 if w.ndim == 4 else w for w in model.get_weights()])
    assert weights()[first] is not values[first]
    want = np.asarray(model.predict_on_batch(x), "float32")
    assert np.abs(np.asarray(forward(x), "float32") - want).max() <= 2 ** -7 * np.abs(want).max()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the PyTorch backend's path")
@pytest.mark.parametrize("name", ["se_resnet18", "senet154", "seresnextaa101d_32x8d"])
def test_keras_engine_forward_on_torch_equals_the_model(name):
    """The Keras engine on PyTorch runs the model's graph itself: each layer's `call` (no
    `Layer.__call__`), every BatchNorm folded into its conv, the SE gates' pool and sigmoid as
    torch ops, ReLU / Add / Multiply in place, 1x1 convs at batch 1 as matrix products. The
    model's outputs up to float32 rounding (the fold reorders the arithmetic), for logits
    (dropout off) and feature maps, at batch 1 and 2; a mixed bfloat16 model runs the same
    steps under autocast, within bfloat16's precision."""
    import torch

    from senet import engines
    from senet.blocks import BatchNormalization

    rng = np.random.default_rng(3)
    for kwargs in ({"classes": 5, "classifier_activation": None}, {"features_only": True}):
        model = senet.build(tiny(name), input_shape=(64, 96, 3), **kwargs)
        _move_batchnorms(model, rng)
        forward = engines._torch_forward(model)
        assert engines._graph_steps(model, {}) is not None  # not Keras' walk, the fallback
        folded = engines._folded_convs(model, torch)
        bns = [l for l in model.layers if isinstance(l, BatchNormalization)]
        assert bns and all(folded.get(l) is engines._passed_on for l in bns)
        gates = [l for l in model.layers if type(l).__name__ in
                 ("GlobalAveragePooling2D", "Activation")]
        assert gates and set(gates) <= set(engines._gate_ops(model, torch))
        in_place = {type(l).__name__ for l in engines._in_place_ops(model, torch)}
        assert {"ReLU", "Add"} <= in_place, in_place  # the path does work in place
        for batch in (1, 2):
            x = rng.normal(size=(batch, 64, 96, 3)).astype("float32")
            want = keras.tree.flatten(model(x, training=False))
            got = keras.tree.flatten(forward(x))
            assert len(got) == len(want) == (4 if "features_only" in kwargs else 1)
            for g, w in zip(got, want):
                g, w = keras.ops.convert_to_numpy(g), keras.ops.convert_to_numpy(w)
                assert g.shape == w.shape and w.std() > 0.1
                assert np.abs(g - w).max() <= 1e-5 * max(1.0, float(np.abs(w).max()))
    # mixed bfloat16: the same steps under autocast, float32 outputs near the float32 model's
    weights = model.get_weights()
    mixed = _build_mixed(tiny(name), input_shape=(64, 96, 3), features_only=True)
    mixed.set_weights(weights)
    got = keras.tree.flatten(engines._torch_forward(mixed)(x))
    for g, w in zip(got, keras.tree.flatten(model(x, training=False)), strict=True):
        g, w = keras.ops.convert_to_numpy(g), keras.ops.convert_to_numpy(w)
        assert g.dtype == np.float32 and g.shape == w.shape
        assert np.abs(g - w).max() <= 0.05 * float(np.abs(w).max())
        assert np.abs(g - w).max() > 1e-6  # computed in bfloat16 indeed
