"""Catalogue weights end to end: timm's files from a Hub lookalike on 127.0.0.1, loaded with
`weights="imagenet"` / `"arch.tag"`, give timm's logits (issue 8's proof).

For each modern architecture, timm's model with calibrated random BatchNorms is saved as
safetensors (as the Hub publishes it) and served as the default tag's file; the entry's sha256
is pointed at the generated file, since the real file cannot be fetched offline; everything
else is the production path: huggingface_hub downloads, the sha256 is checked, the file is
mapped, checked against the built model and cached. Runs on every backend; the 101/152/201-
layer nets are marked slow.
"""

import dataclasses
import hashlib
import os

import numpy as np
import pytest

import keras
import senet
from senet import catalogue
from senet.errors import DownloadError, HashMismatchError
from senet.variants import VARIANTS

pytestmark = [pytest.mark.backends, pytest.mark.references]
torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from forward import forward  # noqa: E402
from timm_reference import (random_timm_model, rgb_images, save, timm_features,  # noqa: E402
                            timm_logits)

MODERN = [v.name for v in VARIANTS.values() if not v.legacy]
FAST = ("seresnet50", "seresnext26t_32x4d")
ODD = (193, 257)
SMALL, SMALL_ODD = 128, (97, 129)  # the large nets' inputs: every layer, a fifth of the work


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def publish(hub_server, monkeypatch, tmp_path):
    """publish(key, timm model): serve its file as the entry's Hub file, pinned to its sha256."""

    def publish(key, model, fmt=None):
        entry = catalogue.CATALOGUE[key]
        fmt = fmt or ("safetensors" if entry.file.endswith(".safetensors") else "zip")
        data = save(model, tmp_path / f"{key}.{fmt}", fmt).read_bytes()
        hub_server.hub[(entry.hub, entry.file)] = data
        monkeypatch.setitem(catalogue.CATALOGUE, key, dataclasses.replace(entry, sha256=sha(data)))
        return data

    return publish


def logits(model, rgb):
    return forward(model, senet.preprocess_input(rgb))


def _cases():
    for name in MODERN:
        yield pytest.param(name, marks=() if name in FAST else pytest.mark.slow, id=name)


@pytest.mark.parametrize("name", list(_cases()))
def test_default_weights_give_timms_logits_and_features(name, publish, hub_server, home):
    """The two fast nets: logits at the tag's test size, then a `features_only` backbone at an
    odd size, loaded from the cache. The large nets (the same blocks, 100-200 layers deep): one
    model of any input size gives the logits at 128 px and its stage outputs at 97x129, which
    saves a second build and four fifths of the arithmetic."""
    entry = catalogue.default(name)
    reference = random_timm_model(name, seed=5)
    publish(entry.key, reference)
    large = name not in FAST

    if large:
        model = senet.create_model(name, weights="imagenet", classifier_activation=None,
                                   input_shape=(None, None, 3))
        size, odd = SMALL, SMALL_ODD
    else:
        model = senet.create_model(name, weights="imagenet", classifier_activation=None)
        assert model.input_shape[1:3] == (entry.eval_size, entry.eval_size)
        size, odd = entry.eval_size, ODD
    rgb = rgb_images(2, size)
    want = timm_logits(reference, rgb)
    tolerance = 1e-4 * max(1.0, float(np.abs(want).max()))
    # The outputs depend on the input: two images differ by far more than the tolerance.
    assert want.std() > 0.5 and np.abs(want[0] - want[1]).max() > 100 * tolerance
    got = logits(model, rgb)
    diff = float(np.abs(got - want).max())
    if os.environ.get("SENET_RECORD_DIFFS"):
        with open(os.environ["SENET_RECORD_DIFFS"], "a") as f:
            f.write(f"catalogue {entry.key} {keras.backend.backend()} {size}px logits "
                    f"{diff:.2e} (logits range {want.min():.1f}..{want.max():.1f})\n")
    assert diff <= tolerance
    assert model.senet_weights["tag"] == entry.key
    assert model.senet_weights["preprocessing"]["interpolation"] == entry.interpolation

    # The four stage outputs at an odd size.
    if large:
        v = VARIANTS[name]
        stages = [model.get_layer(f"conv{i + 2}_{d}_relu").output for i, d in enumerate(v.depths)]
        feats = keras.Model(model.inputs, stages)
    else:  # a backbone, from the cache this time
        feats = senet.create_model(name, weights="imagenet", features_only=True,
                                   input_shape=(*odd, 3))
    rgb = rgb_images(1, odd, seed=1)
    got = forward(feats, senet.preprocess_input(rgb))
    for g, w in zip(got, timm_features(reference, rgb), strict=True):
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-4 * max(1.0, float(np.abs(w).max()))
    assert hub_server.full[f"{entry.hub}/{entry.file}"] == 1  # downloaded once, converted once


@pytest.mark.one_backend
def test_a_tag_by_name_and_by_arch_tag(publish, hub_server, home):
    reference = random_timm_model("seresnet50", seed=6)
    publish("seresnet50.a3_in1k", reference)
    a = senet.create_model("seresnet50.a3_in1k", weights="imagenet", classifier_activation=None)
    b = senet.create_model("seresnet50", weights="a3_in1k", classifier_activation=None)
    c = senet.create_model("seresnet50", weights="seresnet50.a3_in1k", classifier_activation=None)
    assert a.input_shape[1:3] == (224, 224)  # a3's evaluation size, not the default tag's 288
    rgb = rgb_images(2, 224)
    want = timm_logits(reference, rgb)
    for m in (a, b, c):
        assert np.abs(logits(m, rgb) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert hub_server.full["timm/seresnet50.a3_in1k/model.safetensors"] == 1


def test_fine_tuning_head_from_catalogue_weights(publish, hub_server, home):
    reference = random_timm_model("seresnext26t_32x4d", seed=7)
    publish("seresnext26t_32x4d.bt_in1k", reference)
    m = senet.create_model("seresnext26t_32x4d", weights="imagenet", classes=10,
                           input_shape=(64, 64, 3))
    assert m.output_shape == (None, 10) and m.senet_weights["head"] == "new"
    stem = m.get_layer("conv1_1_3x3_s2").get_weights()[0]
    want = reference.conv1[0].weight.detach().numpy().transpose(2, 3, 1, 0)[:, :, ::-1]
    np.testing.assert_allclose(stem, want, atol=1e-7)


@pytest.mark.slow
def test_imagenet_12k_head(publish, hub_server, home):
    key = "seresnextaa101d_32x8d.sw_in12k"
    reference = random_timm_model("seresnextaa101d_32x8d", seed=8, num_classes=11821)
    publish(key, reference)
    m = senet.create_model(key, weights="imagenet", classifier_activation=None,
                           input_shape=(96, 96, 3))
    assert m.output_shape == (None, 11821)
    rgb = rgb_images(2, 96)
    want = timm_logits(reference, rgb)
    got = logits(m, rgb)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    decoded = senet.decode_predictions(got, top=1, model=m)
    table = [w for w, _ in senet.imagenet.imagenet12k_table()]
    assert decoded[0][0][0] == table[int(np.argmax(want[0]))]


@pytest.mark.one_backend
def test_pinned_sha256_mismatch_is_rejected_and_nothing_cached(hub_server, home, tmp_path):
    key = "seresnext26d_32x4d.bt_in1k"  # pinned in the catalogue: the real file's sha256
    entry = catalogue.CATALOGUE[key]
    data = save(random_timm_model("seresnext26d_32x4d", seed=9), tmp_path / "x", "safetensors")
    hub_server.hub[(entry.hub, entry.file)] = data.read_bytes()
    with pytest.raises(HashMismatchError, match=entry.sha256):
        senet.create_model(key, weights="imagenet")
    assert not list((home / "converted").glob("*.h5")) if (home / "converted").exists() else True
    blobs = list((tmp_path / "hf").rglob("blobs/*"))
    assert blobs == [], blobs  # nothing of the wrong file stays in the Hub cache either


@pytest.mark.one_backend
def test_declared_sha256_mismatch_is_rejected(publish, hub_server, home, monkeypatch):
    """An unpinned entry is checked against the sha256 the Hub declares (its ETag)."""
    key = "seresnet50.a1_in1k"
    data = publish(key, random_timm_model("seresnet50", seed=10))
    entry = catalogue.CATALOGUE[key]
    monkeypatch.setitem(catalogue.CATALOGUE, key, dataclasses.replace(entry, sha256=None))
    hub_server.behaviour[f"{entry.hub}/{entry.file}"] = ("etag", sha(data[::-1]))
    with pytest.raises(HashMismatchError, match="the one the Hub declares"):
        senet.create_model(key, weights="imagenet")


@pytest.mark.one_backend
def test_legacy_weights_fall_back_to_the_release_url(hub_server, home, monkeypatch, tmp_path):
    """The 2017 weights: no Hub copy answers, so the GitHub release file is fetched."""
    key = "se_resnet18.in1k"
    reference = random_timm_model("se_resnet18", seed=11)
    data = save(reference, tmp_path / "r18.pth", "zip").read_bytes()
    name = f"seresnet18-{sha(data)[:8]}.pth"
    (hub_server.root / name).write_bytes(data)
    entry = catalogue.CATALOGUE[key]
    monkeypatch.setitem(catalogue.CATALOGUE, key, dataclasses.replace(
        entry, url=f"{hub_server.url}/{name}", url_sha256=sha(data)[:8]))
    m = senet.SEResNet18(weights="imagenet", classifier_activation=None)
    rgb = rgb_images(2, 224)
    want = timm_logits(reference, rgb)
    assert np.abs(logits(m, rgb) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert hub_server.requests[
        ("HEAD", "timm/legacy_seresnet18.in1k/resolve/main/model.safetensors")] >= 1
    assert hub_server.full[name] == 1


@pytest.mark.one_backend
def test_no_network_gives_one_line_with_the_offline_route(home, no_retry_wait):
    with pytest.raises(DownloadError) as err:
        senet.create_model("seresnet50", weights="imagenet")
    text = str(err.value)
    assert "\n" not in text
    assert "timm/seresnet50.a1_in1k" in text and "model.safetensors" in text
    assert "senet convert model.safetensors --model seresnet50.a1_in1k" in text


@pytest.mark.one_backend
def test_se_bn_inception_has_no_download():
    with pytest.raises(DownloadError, match="senet convert SE-BN-Inception.caffemodel"):
        senet.SEBNInception(weights="imagenet")


@pytest.mark.one_backend
def test_unknown_tags_get_suggestions():
    with pytest.raises(ValueError, match="seresnet50.a2_in1k"):
        senet.create_model("seresnet50", weights="seresnet50.a2_in1kk")
    with pytest.raises(ValueError, match="weights of gluon_senet154, not of senet154"):
        senet.create_model("senet154", weights="senet154.gluon_in1k")


@pytest.mark.one_backend
def test_offline_route_convert_by_hand_keeps_the_tags_preprocessing(tmp_path, home):
    """`senet convert model.safetensors --model ARCH.TAG` (a file fetched by hand), then
    predict with it: the tag's size, crop and interpolation are used (bicubic, crop 1.0,
    288 px for seresnet50.a1_in1k), which a bilinear 0.875 crop at 224 px would not match."""
    import json

    from PIL import Image

    from cli_runner import run
    from senet.images import eval_transform, load_pil

    reference = random_timm_model("seresnet50", seed=13)
    src = save(reference, tmp_path / "model.safetensors", "safetensors")
    out = tmp_path / "a1.weights.h5"
    r = run("convert", src, "--model", "seresnet50.a1_in1k", "--output", out)
    assert r.returncode == 0, r.stderr
    assert "as seresnet50.a1_in1k" in r.stdout

    model = senet.create_model("seresnet50", weights=str(out))
    meta = model.senet_weights
    assert meta["tag"] == "seresnet50.a1_in1k" and model.input_shape[1:3] == (288, 288)
    assert meta["preprocessing"] == {"size": 288, "crop_pct": 1.0, "interpolation": "bicubic"}

    photo = tmp_path / "photo.jpg"
    Image.open(senet.__path__[0] + "/data/chelsea.jpg").save(photo)
    r = run("predict", photo, "--weights", out, "--json", "--top", "1000")
    assert r.returncode == 0, r.stderr
    got = {p["wnid"]: p["probability"] for p in json.loads(r.stdout)["predictions"]}
    table = senet.imagenet.class_table("sorted")

    def probs(size, crop, interpolation):
        m = senet.create_model("seresnet50", weights=str(out), input_shape=(size, size, 3))
        x = eval_transform(load_pil(photo), size, crop, interpolation)[None]
        p = forward(m, senet.preprocess_input(x))[0]
        return {table[i][0]: float(p[i]) for i in range(1000)}

    want = probs(288, 1.0, "bicubic")
    error = max(abs(got[w] - want[w]) for w in want)
    assert error <= 1e-5
    # The test can tell the protocols apart: the bilinear 0.875 crop at 224 px is far off.
    other = probs(224, 0.875, "bilinear")
    assert max(abs(got[w] - other[w]) for w in other) > 50 * max(error, 1e-6)
