"""SENet (Squeeze-and-Excitation networks) for Keras 3: TensorFlow, JAX and PyTorch.

    import senet
    model = senet.SEResNeXt50(weights="imagenet")
    preds = model.predict(senet.preprocess_input(images))
    senet.decode_predictions(preds)

Keras (and its backend) is imported on first use of a model function, so that light tools
(`senet list`, reading weight files) start fast.
"""

from senet.catalogue import CATALOGUE, Pretrained
from senet.errors import SenetError
from senet.variants import VARIANTS, Variant, get_variant

__version__ = "0.1.0"

_LAZY = {
    "build": "senet.models", "create_model": "senet.models", "list_models": "senet.models",
    "FEATURE_STRIDES": "senet.models",
    "preprocess_input": "senet.imagenet", "decode_predictions": "senet.imagenet",
    "convert": "senet.conversion", "inference": "senet.engines",
    **{v.constructor: "senet.models" for v in VARIANTS.values() if v.constructor},
}

__all__ = ["VARIANTS", "Variant", "get_variant", "CATALOGUE", "Pretrained", "SenetError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'senet' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
