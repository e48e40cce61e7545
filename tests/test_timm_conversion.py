"""Issue 4's proof for PyTorch sources: timm/Cadene checkpoints, both torch file formats.

Every timm legacy SENet (random, calibrated BatchNorms) saved as zip and as the legacy
pickle stream, converted by `senet convert` without torch, gives timm's logits on the same
images. Runs on every backend; the big nets are marked slow.
"""

import os

import numpy as np
import pytest

import keras
import senet
from senet.weights.convert import convert
from senet.weights.torch_format import read_state_dict

pytestmark = pytest.mark.backends
torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from timm_reference import TIMM_NAMES, random_timm_model, rgb_images, timm_logits  # noqa: E402

FAST = ("se_resnet18", "se_resnet50", "se_resnext26_32x4d")
LOGIT_TOL = 1e-4


def _cases():
    """Every net in the zip format; the legacy pickle stream for the small nets and SENet-154."""
    for name in TIMM_NAMES:
        marks = () if name in FAST else pytest.mark.slow
        yield pytest.param(name, False, marks=marks, id=f"{name}-zip")
        if name in FAST or name == "senet154":
            yield pytest.param(name, True, marks=marks, id=f"{name}-legacy")


@pytest.mark.parametrize("name,legacy_format", list(_cases()))
def test_converted_timm_checkpoint_gives_timm_logits(name, legacy_format, tmp_path):
    model = random_timm_model(name, seed=1)
    pth = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), pth, _use_new_zipfile_serialization=not legacy_format)

    rgb = rgb_images(2)
    want = timm_logits(model, rgb)
    assert want.std() > 0.5, "the reference net is degenerate"

    out = tmp_path / f"{name}.weights.h5"
    meta = convert(pth, name, out)
    assert meta["input"] == "torch" and meta["class_order"] == "sorted"
    keras_model = senet.create_model(name, weights=str(out), classifier_activation=None)
    got = keras.ops.convert_to_numpy(keras_model.predict(senet.preprocess_input(rgb), verbose=0))
    diff = np.abs(got - want).max()
    if os.environ.get("SENET_RECORD_DIFFS"):
        with open(os.environ["SENET_RECORD_DIFFS"], "a") as f:
            f.write(f"timm {name} {'legacy' if legacy_format else 'zip'} "
                    f"{keras.backend.backend()} logits {diff:.2e} "
                    f"(logits range {want.min():.1f}..{want.max():.1f})\n")
    assert diff <= LOGIT_TOL, f"max |logit diff| {diff:.2e} (logits up to {np.abs(want).max():.1f})"


def test_reader_matches_torch_load(tmp_path):
    model = random_timm_model("se_resnet18")
    pth = tmp_path / "m.pth"
    torch.save(model.state_dict(), pth)
    arrays = read_state_dict(pth)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(arrays[k], v.numpy())


def test_parameter_counts_equal_timms():
    import timm

    for name, timm_name in TIMM_NAMES.items():
        if name in FAST:
            n = sum(p.numel() for p in timm.create_model(timm_name).parameters())
            assert n == senet.VARIANTS[name].params


def test_wrong_architecture_is_named(tmp_path):
    pth = tmp_path / "r18.pth"
    torch.save(random_timm_model("se_resnet18").state_dict(), pth)
    with pytest.raises(ValueError, match=r"missing layer1\.0\.conv3\.weight.*--model"):
        convert(pth, "se_resnet50", tmp_path / "x.weights.h5")
    assert not (tmp_path / "x.weights.h5").exists()
