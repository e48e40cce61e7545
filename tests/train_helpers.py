"""Small real datasets for the training tests: scikit-learn's digits as PNG class folders, and
the shared ImageNet sample photographs (read in place, never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample"


def write_digits(root, per_class=None, size=32, first=0, count=None):
    """scikit-learn's handwritten digits (8x8, 0-16) as size x size greyscale PNGs in class
    folders root/0 .. root/9. Images `first` .. `first + count` (all 1,797 by default), at
    most `per_class` of each digit. Returns root."""
    from PIL import Image

    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    end = len(digits.images) if count is None else first + count
    seen = {}
    for i in range(first, end):
        y = int(digits.target[i])
        if per_class is not None and seen.get(y, 0) >= per_class:
            continue
        seen[y] = seen.get(y, 0) + 1
        folder = Path(root) / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BILINEAR).save(
            folder / f"{i:04d}.png")
    return Path(root)


def photos(n=64):
    """The first `n` shared ImageNet photographs (sorted), or a skip when they are absent."""
    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} is absent (the shared ImageNet sample is not in this checkout)")
    files = sorted(p for p in PHOTOS.iterdir() if p.suffix == ".JPEG")[:n]
    if len(files) < n:
        pytest.skip(f"{PHOTOS} has {len(files)} photographs, the test needs {n}")
    return files


def label_file(path, files):
    """A flat-folder label file: 'name wnid' per line (the wnid starts each file name)."""
    Path(path).write_text("".join(f"{f.name} {f.name.split('_')[0]}\n" for f in files))
    return Path(path)


def env_for_child(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update({k: str(v) for k, v in extra.items()})
    return env
