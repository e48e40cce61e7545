"""Class tables, preprocess_input, decode_predictions and the input adapter."""

from pathlib import Path

import numpy as np
import pytest

import senet
from senet import imagenet

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def test_class_tables_match_the_reference_files():
    if not REFERENCE.exists():
        pytest.skip("shared/reference is not beside the repository")
    sorted_lines = (REFERENCE / "imagenet" / "synset_words_sorted.txt").read_text().splitlines()
    devkit_lines = (REFERENCE / "imagenet" / "synsets_devkit_order.txt").read_text().splitlines()
    assert [w for w, _ in imagenet.class_table("sorted")] == [l.split()[0] for l in sorted_lines]
    assert [w for w, _ in imagenet.class_table("devkit")] == [l.strip() for l in devkit_lines]


def test_devkit_to_sorted_maps_the_sea_snake():
    # Reference README: val image 1 is n01751748 (sea snake): devkit 489, sorted 65.
    perm = imagenet.devkit_to_sorted()
    assert imagenet.class_table("sorted")[65][0] == "n01751748"
    assert imagenet.class_table("devkit")[489][0] == "n01751748"
    assert perm[65] == 489
    devkit_logits = np.zeros((1, 1000))
    devkit_logits[0, 489] = 1
    assert senet.decode_predictions(devkit_logits[:, perm], top=1)[0][0][:2] == (
        "n01751748", "sea snake")
    assert senet.decode_predictions(devkit_logits, top=1, class_order="devkit")[0][0][0] == "n01751748"


def test_preprocess_input_is_bgr_minus_mean():
    rgb = np.array([[[[10.0, 20.0, 30.0]]]])
    out = senet.preprocess_input(rgb)
    np.testing.assert_allclose(out[0, 0, 0], [30 - 104, 20 - 117, 10 - 123])
    assert out.dtype == np.float32
    first = senet.preprocess_input(rgb.transpose(0, 3, 1, 2), data_format="channels_first")
    np.testing.assert_allclose(first[0, :, 0, 0], out[0, 0, 0])
    with pytest.raises(ValueError, match="3 RGB channels"):
        senet.preprocess_input(np.zeros((1, 4, 4, 4)))


def test_preprocess_input_accepts_backend_tensors():
    import keras

    x = keras.ops.convert_to_tensor(np.full((1, 2, 2, 3), 100.0, "float32"))
    y = keras.ops.convert_to_numpy(senet.preprocess_input(x))
    np.testing.assert_allclose(y[0, 0, 0], [-4, -17, -23])


def test_decode_predictions_top_k_and_bad_shape():
    p = np.random.default_rng(0).random((2, 1000))
    out = senet.decode_predictions(p, top=3)
    assert [len(r) for r in out] == [3, 3]
    for row, probs in zip(out, p):
        assert [s for _, _, s in row] == sorted(probs)[::-1][:3]
    with pytest.raises(ValueError, match="shape"):
        senet.decode_predictions(np.zeros((2, 10)))


def test_torch_input_adapter_is_exact():
    """Caffe input through the adapter equals timm's normalization of the same RGB pixels."""
    rgb = np.random.default_rng(1).uniform(0, 255, (1, 5, 5, 3)).astype("float32")
    adapter = imagenet.input_adapter("torch")
    import keras

    got = keras.ops.convert_to_numpy(adapter(senet.preprocess_input(rgb)))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = ((rgb / 255 - mean) / std)[..., ::-1]  # BGR channel order, as the converted conv1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
