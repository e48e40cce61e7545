"""weights="imagenet" end to end: a real HTTP server on 127.0.0.1 serves a timm checkpoint
(generated here) as the published file; the model downloads, verifies, converts, caches it.

The catalogue entry of SE-ResNet-18 is pointed at the generated file's own sha256 prefix, since
the real file cannot be fetched offline; everything else is the production path.
"""

import dataclasses
import hashlib

import numpy as np
import pytest

import keras
import senet
from senet import variants
from senet.weights import hub, native

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from timm_reference import random_timm_model, rgb_images, timm_logits  # noqa: E402

NAME = "se_resnet18"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(bytes of a timm SE-ResNet-18 .pth, timm's logits on rgb_images(2))."""
    model = random_timm_model(NAME, seed=3)
    path = tmp_path_factory.mktemp("pth") / "w.pth"
    torch.save(model.state_dict(), path)
    return path.read_bytes(), timm_logits(model, rgb_images(2))


@pytest.fixture
def published(checkpoint, server, home, monkeypatch):
    """Serve the checkpoint under a catalogue name carrying its real sha256 prefix."""
    data, _ = checkpoint
    prefix = hashlib.sha256(data).hexdigest()[:8]
    file_name = f"seresnet18-{prefix}.pth"
    (server.root / file_name).write_bytes(data)
    v = dataclasses.replace(variants.VARIANTS[NAME], weights_file=f"v0.1-weights/{file_name}")
    monkeypatch.setitem(variants.VARIANTS, NAME, v)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    return file_name


def logits_of(model):
    return keras.ops.convert_to_numpy(model.predict(senet.preprocess_input(rgb_images(2)), verbose=0))


def test_download_convert_cache_and_reuse(published, checkpoint, server, home):
    _, want = checkpoint
    model = senet.SEResNet18(weights="imagenet", classifier_activation=None)
    assert np.abs(logits_of(model) - want).max() <= 1e-4
    assert server.full[published] == 1
    assert model.senet_weights["input"] == "torch"
    converted = list((home / "converted").glob("*.weights.h5"))
    assert len(converted) == 1

    server.stop()  # the second call needs no network: converted file from the cache
    again = senet.create_model(NAME, weights="imagenet", classifier_activation=None)
    np.testing.assert_allclose(logits_of(again), logits_of(model), atol=1e-6)
    # The head pools globally, so the classifier runs at other sizes too (as timm's does).
    small = senet.create_model(NAME, weights="imagenet", input_shape=(160, 160, 3))
    probs = small.predict(senet.preprocess_input(rgb_images(1, 160)), verbose=0)
    assert probs.shape == (1, 1000) and np.isclose(probs.sum(), 1, atol=1e-5)


def test_damaged_converted_cache_is_rebuilt(published, checkpoint, server, home):
    senet.SEResNet18(weights="imagenet", include_top=False)
    (converted,) = (home / "converted").glob("*.weights.h5")
    weights, meta = native.read(converted)
    weights["conv2_1_3x3a"][0] = weights["conv2_1_3x3a"][0] + 1  # a silent bit rot
    import h5py

    with h5py.File(converted, "r+") as f:
        f["conv2_1_3x3a"]["0"][...] = weights["conv2_1_3x3a"][0]
    model = senet.SEResNet18(weights="imagenet", classifier_activation=None)
    assert np.abs(logits_of(model) - checkpoint[1]).max() <= 1e-4
    assert server.full[published] == 1  # the verified download was reused


def test_wrong_hash_is_rejected_and_nothing_cached(checkpoint, server, home, monkeypatch):
    data, _ = checkpoint
    file_name = variants.VARIANTS[NAME].weights_file.rsplit("/", 1)[1]  # the real name and hash
    (server.root / file_name).write_bytes(data)
    monkeypatch.setenv("SENET_WEIGHTS_MIRROR", server.url)
    with pytest.raises(hub.HashMismatchError, match=variants.VARIANTS[NAME].weights_sha256):
        senet.SEResNet18(weights="imagenet")
    leftovers = [p for p in home.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def test_server_gone_says_what_to_do(published, server, home):
    server.stop()
    with pytest.raises(hub.DownloadError) as err:
        senet.SEResNet18(weights="imagenet")
    message = str(err.value)
    assert server.url in message and "senet convert" in message


def test_no_downloadable_weights_for_se_bn_inception():
    with pytest.raises(ValueError, match="senet convert .*--model se_bn_inception"):
        senet.SEBNInception(weights="imagenet")
