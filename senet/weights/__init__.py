"""Weights: reading every published format, the project's own file, the download cache."""

from __future__ import annotations

import os


def published(name: str) -> bool:
    """Whether the variant `name` has published ImageNet weights."""
    return False


def load_weights(model, variant, weights):
    """Load `weights` ('imagenet' or a file path) into a freshly built `model`."""
    if weights == "imagenet":
        raise ValueError(f"No published ImageNet weights are available yet for {variant.name}.")
    model.load_weights(os.fspath(weights))
