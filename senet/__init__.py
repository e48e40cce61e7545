"""SENet (Squeeze-and-Excitation networks) for Keras 3: TensorFlow, JAX and PyTorch."""

from senet.models import CONSTRUCTORS, FEATURE_STRIDES, build, create_model, list_models
from senet.variants import VARIANTS, Variant, get_variant

globals().update(CONSTRUCTORS)

__version__ = "0.1.0"
__all__ = ["FEATURE_STRIDES", "VARIANTS", "Variant", "build", "create_model", "get_variant",
           "list_models", *CONSTRUCTORS]
