"""Keras models of the SE family, built from the table in `senet.variants`.

`build` is the one builder: it resolves `weights=` (the catalogue entry or the file header
decides the input adapter, the classes and the default input size), builds the model once,
then loads and checks the weights (`senet.weights.loader`). `create_model(name, ...)` and the
keras.applications-style constructors (`SEResNet50(...)`, the 2017 family) are thin entry
points over it.
"""

from __future__ import annotations

import contextlib

import keras
from keras import layers

from senet import blocks, catalogue, imagenet
from senet.errors import ArgumentError
from senet.variants import DEFAULT_SIZE, INCEPTION_MODULES, MIN_SIZE, VARIANTS, Variant, get_variant
from senet.weights import loader

FEATURE_STRIDES = (4, 8, 16, 32)


def _check_arguments(include_top, resolved, input_tensor, input_shape, pooling, classes,
                     classifier_activation, weights):
    """All argument checks in one place; returns the input shape to build with."""
    if not isinstance(include_top, bool):
        raise ArgumentError(f"`include_top` must be True or False. Received: include_top={include_top!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ArgumentError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ArgumentError(
            f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and weights is not None and classifier_activation not in (None, "softmax") \
            and (resolved is None or resolved.classes == classes):
        raise ArgumentError(
            "Only `None` and 'softmax' are allowed for `classifier_activation` when loading "
            f"pretrained weights. Received: classifier_activation={classifier_activation!r}")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ArgumentError(f"Unknown `classifier_activation`: {classifier_activation!r}.") from None

    channels_first = keras.config.image_data_format() == "channels_first"
    if input_shape is None and input_tensor is not None:
        try:
            input_shape = tuple(keras.ops.shape(input_tensor)[1:])
        except Exception:  # noqa: BLE001 - symbolic shapes without a static rank
            input_shape = None
    if input_shape is None:
        size = None
        if include_top:
            size = (resolved.meta.get("preprocessing") or {}).get("size", DEFAULT_SIZE) \
                if resolved else DEFAULT_SIZE
        return (3, size, size) if channels_first else (size, size, 3)

    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ArgumentError(
            f"`input_shape` must have 3 dimensions (height, width, channels"
            f"{'' if not channels_first else ', channels first'}). Received: input_shape={input_shape}")
    c, h, w = (input_shape if channels_first else (input_shape[2], input_shape[0], input_shape[1]))
    if c is not None and c != 3 and weights is not None:
        raise ArgumentError(
            f"Pretrained weights expect 3 input channels; input_shape={input_shape} has {c}. "
            f"(The data format is {keras.config.image_data_format()}.)")
    for dim, label in ((h, "height"), (w, "width")):
        if dim is not None and dim < MIN_SIZE:
            raise ArgumentError(
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
          pooling=None, classes=None, classifier_activation="softmax", name=None,
          features_only=False):
    """Build an SE architecture (a `Variant` or its name) as a Keras functional model.

    `classes=None` means the classes of the weights (1000 for ImageNet-1k, 11,821 for the
    ImageNet-12k heads, a trained dataset's own), else 1000. Pretrained weights with another
    `classes` load everything but the classifier, which starts fresh (fine-tuning).
    With `features_only=True` the model outputs the four feature maps at strides 4, 8, 16
    and 32 (a list, in that order); `include_top` and `pooling` are then ignored.
    """
    variant = get_variant(variant)
    if features_only:
        include_top, pooling = False, None
    resolved = loader.resolve(variant, weights) if weights is not None else None
    if classes is None:
        classes = (resolved.classes if resolved and resolved.classes else 1000)
    input_shape = _check_arguments(include_top, resolved, input_tensor, input_shape, pooling,
                                   classes, classifier_activation, weights)
    new_head = bool(include_top and resolved and resolved.classes and resolved.classes != classes)
    img_input, user_tensor = _model_input(input_tensor, input_shape)

    x = img_input
    if resolved and resolved.meta.get("input", "caffe") != "caffe":
        x = imagenet.input_adapter(resolved.meta["input"])(x)
    # With weights, every convolution is loaded below (or the load fails): no random draws.
    with blocks.weights_to_come() if resolved is not None else contextlib.nullcontext():
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

    if resolved is not None:
        loader.load_into(model, resolved, variant, new_head=new_head)
        meta = dict(resolved.meta)
        if new_head:  # the classifier is new: its classes are not the weights' any more
            for key in ("class_set", "class_order", "class_names", "top1"):
                meta.pop(key, None)
            meta.update(classes=classes, head="new")
        model.senet_weights = meta  # provenance, input convention, classes, preprocessing
    return model


def create_model(name, **kwargs):
    """Build a model by name (`senet.list_models()`), timm-style.

    `name` may carry a tag, `"seresnet50.a1_in1k"`: with `weights="imagenet"` that tag's
    weights are loaded. Takes every argument of the constructors, plus `features_only=True`
    for the stride-4/8/16/32 feature maps.
    """
    arch, tag = catalogue.split(name)
    if tag is not None and kwargs.get("weights") == "imagenet":
        kwargs["weights"] = catalogue.find(name).key
    return build(get_variant(arch), **kwargs)


def list_models(pretrained=False):
    """The architecture names, in table order; `pretrained=True`: the `arch.tag` of every
    downloadable catalogue entry instead."""
    if pretrained:
        return [e.key for e in catalogue.CATALOGUE.values() if e.downloadable]
    return list(VARIANTS)


_DOC = """Instantiate the {title} architecture{official}.

Reference: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.

Args:
    include_top: whether to include the global pool and the fully-connected classifier.
    weights: `None` (random initialization), `"imagenet"` (the default published ImageNet
        weights, {default}, downloaded and cached on first use), a tag of this
        architecture ({tags}), or the path of a weights file written by `senet convert`,
        `senet train` or `model.save_weights`.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as image input.
    input_shape: optional shape tuple; with `include_top=True` the weights' evaluation size
        (224 for the 2017 weights), (size, size, 3). Height and width of at least 32 px; any
        size works (the head pools globally).
    pooling: with `include_top=False`, `None` (4D output of the last stage), `"avg"` or
        `"max"` (global pooling, 2D output).
    classes: number of classes, by default the weights' (1000 without weights). Pretrained
        weights with other `classes` keep a fresh classifier (fine-tuning).
    classifier_activation: activation of the classifier (`None` returns logits).
    name: the model name.

Returns:
    A Keras `Model`. Feed it images prepared by `senet.preprocess_input` (every model and every
    weights file takes the same input; the weights' own convention is inside the model).
"""


def _constructor(variant: Variant):
    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=None, classifier_activation="softmax",
                    name=variant.name):
        return build(variant.name, include_top=include_top, weights=weights,
                     input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation, name=name)

    constructor.__name__ = constructor.__qualname__ = variant.constructor
    official = " (official release)" if variant.prototxt else " (timm's 2017-layout SENet family)"
    entries = catalogue.tags(variant)
    constructor.__doc__ = _DOC.format(
        title=variant.title, official=official,
        default=entries[0].key if entries else "none published",
        tags=", ".join(repr(e.tag) for e in entries) or "none")
    return constructor


CONSTRUCTORS = {v.constructor: _constructor(v) for v in VARIANTS.values() if v.constructor}
globals().update(CONSTRUCTORS)
