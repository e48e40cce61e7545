"""PyTorch sources against timm: `senet convert` of timm's files (no torch needed to read them)
gives timm's logits, for the 2017 family (torch.save zip and legacy formats) and for every
block kind of the modern family (tiny rows, safetensors), on every backend.

The full-size modern nets are proven through the catalogue path in test_pretrained.py.
"""

import os

import numpy as np
import pytest

import keras
import senet
from senet.conversion import convert, read
from senet.variants import VARIANTS, tiny
from senet.weights import native
from senet.weights.torch_format import read_state_dict

pytestmark = [pytest.mark.backends, pytest.mark.references]
torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from forward import forward  # noqa: E402
from timm_reference import random_timm_model, rgb_images, save, timm_logits  # noqa: E402

LEGACY = [n for n, v in VARIANTS.items() if v.legacy and v.timm]
MODERN = [n for n, v in VARIANTS.items() if not v.legacy]
FAST = ("se_resnet18", "se_resnet50", "se_resnext26_32x4d")


def _legacy_cases():
    """Every 2017 net in the zip format; the small nets and SENet-154 in the legacy pickle
    stream as well (the same state dict, which must read to the same arrays)."""
    for name in LEGACY:
        formats = ("zip", "legacy") if name in FAST or name == "senet154" else ("zip",)
        yield pytest.param(name, formats, marks=() if name in FAST else pytest.mark.slow,
                           id=name)


def _record(name, fmt, diff, want):
    if os.environ.get("SENET_RECORD_DIFFS"):
        with open(os.environ["SENET_RECORD_DIFFS"], "a") as f:
            f.write(f"timm {name} {fmt} {keras.backend.backend()} logits {diff:.2e} "
                    f"(logits range {want.min():.1f}..{want.max():.1f})\n")


def _check(model, reference, rgb, name, fmt):
    want = timm_logits(reference, rgb)
    tolerance = 1e-4 * max(1.0, float(np.abs(want).max()))
    assert want.std() > 0.5 and np.abs(want[0] - want[1]).max() > 100 * tolerance, "degenerate"
    got = forward(model, senet.preprocess_input(rgb))
    diff = float(np.abs(got - want).max())
    _record(name, fmt, diff, want)
    assert diff <= tolerance, f"max |logit diff| {diff:.2e} (logits up to {np.abs(want).max():.1f})"


@pytest.mark.parametrize("name,formats", list(_legacy_cases()))
def test_converted_timm_legacy_checkpoint_gives_timm_logits(name, formats, tmp_path):
    """One reference, saved in each format and converted; the model built from the first
    conversion gives timm's logits, and every other conversion holds the same arrays."""
    reference = random_timm_model(name, seed=1)
    converted = []
    for fmt in formats:
        pth = save(reference, tmp_path / f"{name}-{fmt}.pth", fmt)
        out = tmp_path / f"{name}-{fmt}.weights.h5"
        meta = convert(pth, name, out)
        assert meta["input"] == "torch" and meta["class_order"] == "sorted"
        assert meta["layout"] == "timm_legacy"
        converted.append(native.read(out)[0])
    for other in converted[1:]:
        assert other.keys() == converted[0].keys()
        for layer, arrays in converted[0].items():
            assert len(other[layer]) == len(arrays)
            for a, b in zip(arrays, other[layer]):
                np.testing.assert_array_equal(a, b)
    model = senet.create_model(name, weights=str(tmp_path / f"{name}-{formats[0]}.weights.h5"),
                               classifier_activation=None)
    rgb = rgb_images(2)
    rgb[1] *= 0.4  # a darker second photo: SENet-154's pooled features barely tell the two apart
    _check(model, reference, rgb, name, "+".join(formats))


@pytest.mark.parametrize("name", MODERN)
def test_every_modern_block_kind_converts_exactly(name, tmp_path):
    """Tiny rows (one unit per stage) keep each row's stem, pool, shortcut, anti-aliasing,
    groups and SE rounding; timm's ResNet class builds the same, at an odd size."""
    v = tiny(name)
    reference = random_timm_model(v, seed=2, num_classes=10)
    src = save(reference, tmp_path / "model.safetensors", "safetensors")
    weights, meta = read(src, v)
    assert meta["layout"] == "timm" and meta["input"] == "torch" and meta["classes"] == 10
    model = senet.build(v, classes=10, classifier_activation=None, input_shape=(None, None, 3))
    from senet.imagenet import input_adapter
    from senet.weights import native

    native.apply(model, weights, str(src))
    inp = keras.Input((None, None, 3))
    adapted = keras.Model(inp, model(input_adapter("torch")(inp)))
    _check(adapted, reference, rgb_images(2, (97, 129)), v.name, "safetensors")


@pytest.mark.one_backend
def test_reader_matches_torch_load(tmp_path):
    model = random_timm_model("se_resnet18")
    pth = tmp_path / "m.pth"
    torch.save(model.state_dict(), pth)
    arrays = read_state_dict(pth)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(arrays[k], v.numpy())


@pytest.mark.one_backend
def test_parameter_counts_equal_timms():
    """The table's counts are timm's (test_models checks them against the built models)."""
    from timm_reference import timm_model

    for name, v in VARIANTS.items():
        if v.timm and name not in ("se_resnet101", "se_resnet152", "senet154", "gluon_senet154",
                                   "seresnextaa201d_32x8d"):
            n = sum(p.numel() for p in timm_model(name).parameters())
            assert n == v.params, name


@pytest.mark.one_backend
def test_wrong_architecture_is_named(tmp_path):
    pth = save(random_timm_model("se_resnet18"), tmp_path / "r18.pth", "zip")
    with pytest.raises(ValueError, match=r"missing layer1\.0\.conv3\.weight"):
        convert(pth, "se_resnet50", tmp_path / "x.weights.h5")
    with pytest.raises(ValueError, match=r"missing"):
        convert(pth, "seresnet50", tmp_path / "x.weights.h5")  # the modern layout's names
    assert not (tmp_path / "x.weights.h5").exists()
