"""Shared fixtures. The Keras backend is chosen by KERAS_BACKEND before anything imports keras."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# torchvision's CUDA build (pulled in by timm) segfaults when imported after TensorFlow;
# imported first, both work. timm is a test-only reference, so import it up front.
try:
    import timm  # noqa: F401
except ImportError:
    pass


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def channels_first():
    """Build models channels_first for the duration of one test."""
    import keras

    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(old)
