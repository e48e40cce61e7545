"""Keras models of the SENet family, built from the table in `senet.variants`.

`build` is the one builder; `SEResNet50(...)` etc. and `create_model(name, ...)` are thin
entry points over it with the `keras.applications` arguments.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from senet import blocks, imagenet
from senet.variants import DEFAULT_SIZE, INCEPTION_MODULES, MIN_SIZE, VARIANTS, Variant, get_variant

FEATURE_STRIDES = (4, 8, 16, 32)


def _check_arguments(include_top, weights, input_tensor, input_shape, pooling,
                     classes, classifier_activation):
    """All argument checks in one place; returns the input shape to build with."""
    if not (weights is None or weights == "imagenet" or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            "'imagenet' (pre-training on ImageNet), or the path to a weights file. "
            f"Received: weights={weights!r}")
    if isinstance(weights, (str, os.PathLike)) and weights != "imagenet" \
            and not os.path.exists(weights):
        raise ValueError(
            f"The weights file {os.fspath(weights)!r} does not exist. Pass weights=None, "
            "'imagenet', or the path of a file written by `senet convert`.")
    if not isinstance(include_top, bool):
        raise ValueError(f"`include_top` must be True or False. Received: include_top={include_top!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            "If using `weights='imagenet'` with `include_top=True`, `classes` should be 1000. "
            f"Received: classes={classes}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and weights is not None and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "Only `None` and 'softmax' are allowed for `classifier_activation` when loading "
            f"pretrained weights. Received: classifier_activation={classifier_activation!r}")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError) as err:
            raise ValueError(f"Unknown `classifier_activation`: {classifier_activation!r}.") from err

    channels_first = keras.config.image_data_format() == "channels_first"
    if input_shape is None and input_tensor is not None:
        try:
            input_shape = tuple(keras.ops.shape(input_tensor)[1:])
        except Exception:  # noqa: BLE001 - symbolic shapes without a static rank
            input_shape = None
    if input_shape is None:
        size = DEFAULT_SIZE if include_top else None
        return (3, size, size) if channels_first else (size, size, 3)

    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must have 3 dimensions (height, width, channels"
            f"{'' if not channels_first else ', channels first'}). Received: input_shape={input_shape}")
    c, h, w = (input_shape if channels_first else (input_shape[2], input_shape[0], input_shape[1]))
    if c is not None and c != 3 and weights is not None:
        raise ValueError(
            f"Pretrained weights expect 3 input channels; input_shape={input_shape} has {c}. "
            f"(The data format is {keras.config.image_data_format()}.)")
    for dim, label in ((h, "height"), (w, "width")):
        if dim is not None and dim < MIN_SIZE:
            raise ValueError(
                f"Input {label} must be at least {MIN_SIZE} px; input_shape={input_shape} "
                f"({keras.config.image_data_format()}) has {label} {dim}.")
    return input_shape


def _model_input(input_tensor, input_shape):
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="input"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    inp = keras.Input(tensor=input_tensor, shape=input_shape, name="input")
    return inp, input_tensor


def build(variant, include_top=True, weights=None, input_tensor=None, input_shape=None,
          pooling=None, classes=1000, classifier_activation="softmax", name=None,
          features_only=False):
    """Build a SENet variant (a `Variant` or its name) as a Keras functional model.

    With `features_only=True` the model outputs the four feature maps at strides 4, 8, 16
    and 32 (a list, in that order), for use as a detection or segmentation backbone;
    `include_top` and `pooling` are then ignored.
    """
    variant = get_variant(variant)
    if features_only:
        include_top, pooling = False, None
    input_shape = _check_arguments(include_top, weights, input_tensor, input_shape,
                                   pooling, classes, classifier_activation)
    img_input, user_tensor = _model_input(input_tensor, input_shape)
    meta = None  # the weights file's metadata decides the input adapter, so read it first
    if weights is not None:
        from senet import weights as weights_module  # noqa: PLC0415 - keeps model building light

        path, arrays, meta = weights_module.resolve(variant, weights)
        if meta and meta.get("classes", 1000) != classes and include_top:
            raise ValueError(f"{path} has a {meta['classes']}-class classifier; pass "
                             f"classes={meta['classes']} or include_top=False.")

    x = img_input
    if meta and meta["input"] != "caffe":
        x = imagenet.input_adapter(meta["input"])(x)
    x = blocks.stem(x, variant)
    if variant.family == "inception":
        features = blocks.inception_body(x, INCEPTION_MODULES)
    else:
        features = blocks.residual_stages(x, variant)
    x = features[-1]

    if features_only:
        outputs = features
    elif include_top:
        x = layers.GlobalAveragePooling2D(name="pool5_7x7_s1")(x)  # = the 7x7/1 pool at 224 px
        if variant.dropout:
            x = layers.Dropout(variant.dropout, name="pool5_dropout_7x7_s1")(x)
        outputs = layers.Dense(classes, activation=classifier_activation, name="classifier")(x)
    elif pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="pool5_7x7_s1")(x)
    elif pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="pool5_max")(x)
    else:
        outputs = x

    inputs = keras.utils.get_source_inputs(user_tensor) if user_tensor is not None else img_input
    model = keras.Model(inputs, outputs, name=name or variant.name)

    if weights is not None:
        weights_module.apply(model, path, arrays)
        model.senet_weights = meta  # provenance, input convention and class order
    return model


def create_model(name, **kwargs):
    """Build a model by name (`senet.list_models()` gives the names), timm-style.

    Takes every argument of the constructors, plus `features_only=True` for the
    stride-4/8/16/32 feature maps.
    """
    return build(get_variant(name), **kwargs)


def list_models(pretrained=False):
    """The model names, in table order; with `pretrained=True`, only those with published weights."""
    from senet.weights import published  # noqa: PLC0415

    return [n for n in VARIANTS if not pretrained or published(n)]


_DOC = """Instantiate the {title} architecture{official}.

Reference: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.

Args:
    include_top: whether to include the global pool and the fully-connected classifier.
    weights: `None` (random initialization), `"imagenet"` (the published ImageNet weights,
        downloaded and cached on first use), or the path to a weights file written by
        `senet convert`.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as image input.
    input_shape: optional shape tuple, (224, 224, 3) by default with `include_top=True`
        ((3, 224, 224) with channels_first). Height and width of at least 32 px; any size,
        non-square included (the head pools globally, so the classifier works at any size).
    pooling: with `include_top=False`, `None` (4D output of the last stage), `"avg"` or
        `"max"` (global pooling, 2D output).
    classes: number of classes, when `include_top=True` and no pretrained weights are loaded.
    classifier_activation: activation of the classifier (`None` returns logits).
    name: the model name.

Returns:
    A Keras `Model`. Feed it images prepared by `senet.preprocess_input` (the preprocessing
    that the loaded weights expect).
"""


def _constructor(variant: Variant):
    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax",
                    name=variant.name):
        return build(variant.name, include_top=include_top, weights=weights,
                     input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation, name=name)

    constructor.__name__ = constructor.__qualname__ = variant.constructor
    official = " (official release)" if variant.prototxt else " (timm's legacy SENet family)"
    constructor.__doc__ = _DOC.format(title=variant.title, official=official)
    return constructor


CONSTRUCTORS = {v.constructor: _constructor(v) for v in VARIANTS.values()}
globals().update(CONSTRUCTORS)
