"""The training input pipeline: finding datasets, refusing bad ones, and streaming them
deterministically (the property `--resume` and multi-worker training rest on)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from senet import data
from senet.errors import DataError, SenetError
from train_helpers import photos, write_digits


def _image(path, size=(40, 30), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 2 * value % 256, 3 * value % 256)).save(path)
    return path


def test_class_folders_and_label_file_find_the_same_dataset(tmp_path):
    for c in ("cat", "dog"):
        for i in range(3):
            _image(tmp_path / "folders" / c / f"{c}{i}.png")
            _image(tmp_path / "flat" / f"{c}{i}.png")
    (tmp_path / "folders" / "dog" / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{c}{i}.png {c}\n" for c in ("dog", "cat") for i in range(3)))
    a = data.find_samples(tmp_path / "folders")
    b = data.find_samples(tmp_path / "flat", labels=labels)
    assert a.class_names == b.class_names == ["cat", "dog"]
    assert [p.split("/")[-1] for p in a.paths] == [p.split("/")[-1] for p in b.paths]
    assert a.labels.tolist() == b.labels.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("case, needle", [
    ("empty", "no images found"),
    ("one class", "only one class ('cat', 2 images)"),
    ("loose", "2 images but no class sub-folders"),
    ("missing", "no such directory"),
])
def test_unusable_datasets_are_refused_in_one_line(tmp_path, case, needle):
    root = tmp_path / "d"
    root.mkdir()
    if case == "one class":
        _image(root / "cat" / "a.png")
        _image(root / "cat" / "b.png")
    elif case == "loose":
        _image(root / "a.png")
        _image(root / "b.png")
    elif case == "missing":
        root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        data.find_samples(root)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, SenetError)


def test_validation_classes_must_match_training(tmp_path):
    for c in ("cat", "dog", "emu"):
        _image(tmp_path / "train" / c / "a.png")
    for c in ("cat", "dog", "fox"):
        _image(tmp_path / "val" / c / "a.png")
    train = data.find_samples(tmp_path / "train")
    with pytest.raises(DataError, match="classes the training set lacks: fox; training "
                                        "classes it lacks: emu"):
        data.find_samples(tmp_path / "val", class_names=train.class_names)


def test_split_holds_out_each_class_reproducibly(tmp_path):
    samples = data.find_samples(write_digits(tmp_path / "d", per_class=10))
    train, val = data.split(samples, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert np.bincount(val.labels).tolist() == [2] * 10
    assert not set(train.paths) & set(val.paths)
    assert data.split(samples, 0.2, seed=3)[1].paths == val.paths


def test_random_resized_crop_stays_in_the_image_and_in_range():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        left, top, right, bottom = data.random_resized_crop_box(500, 375, rng)
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        areas.append((right - left) * (bottom - top) / (500 * 375))
        ratios.append((right - left) / (bottom - top))
    assert 0.07 < min(areas) < 0.12 and max(areas) > 0.95
    assert min(ratios) > 0.74 and max(ratios) < 1.35


def test_hflip_is_the_probability_of_a_mirrored_crop():
    """--hflip 0 never mirrors (digits: a mirrored 2 is no 2), 1 always, 0.5 about half."""
    left_half_white = np.zeros((32, 32, 3), np.uint8)
    left_half_white[:, :16] = 255
    img = Image.fromarray(left_half_white)

    def mirrored(p, n=400):
        rng = np.random.default_rng(0)
        outs = [data.train_transform(img, 32, rng, scale=(1, 1), ratio=(1, 1), hflip=p)
                for _ in range(n)]
        return np.mean([o[:, 0].mean() < o[:, -1].mean() for o in outs])

    assert mirrored(0) == 0 and mirrored(1) == 1
    assert 0.4 < mirrored(0.5) < 0.6


def _views(photo, rng, n, mirror=False):
    """`n` random crops (60-100% of each side) of a photograph, greyscale, 64 px."""
    img = Image.open(photo).convert("L")
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = img.size
    out = []
    for _ in range(n):
        cw, ch = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(img.crop((left, top, left + cw, top + ch)).resize((64, 64)))
    return out


def _folders(root, classes):
    """{class: [PIL images]} written as class folders; their Samples."""
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images):
            img.save(root / name / f"{i}.png")
    return data.find_samples(root)


def test_flips_stay_on_unless_mirror_images_look_like_other_classes(tmp_path):
    """The default flip: off for digits (a mirrored 3 is no 3), on where mirroring keeps the
    class (each class a photograph's views, mirrored or not) and where pixels carry no class
    (unrelated photographs per class, as real photo datasets look to 16 px thumbnails); off
    where the class is the orientation itself (one class a photograph's views, another their
    mirror images)."""
    p, check = data.default_hflip(data.find_samples(write_digits(tmp_path / "digits")))
    assert p == 0 and check.own > 0.95 and check.mirrored < 0.5, check

    rng = np.random.default_rng(0)
    files = photos(40)
    same = {f"c{i}": _views(f, rng, 4) + _views(f, rng, 4, mirror=True)
            for i, f in enumerate(files[:10])}
    p, check = data.default_hflip(_folders(tmp_path / "same", same))
    assert p == 0.5 and check.own > 0.8 and abs(check.own - check.mirrored) < 0.1, check

    unrelated = {f"c{i}": [Image.open(f).convert("L").resize((64, 64)) for f in files[i::4]]
                 for i in range(4)}
    p, check = data.default_hflip(_folders(tmp_path / "unrelated", unrelated))
    assert p == 0.5 and check.own < check.chance + 0.2, check

    handed = {"left": [], "right": []}
    for f in files[:20]:
        handed["left"] += _views(f, rng, 2)
        handed["right"] += _views(f, rng, 2, mirror=True)
    p, check = data.default_hflip(_folders(tmp_path / "handed", handed))
    assert p == 0 and check.mirrored < check.chance, check


def test_epochs_are_a_function_of_seed_and_epoch(tmp_path):
    """The same epoch gives the same batches however it is reached (the basis of an exact
    --resume); another epoch or seed gives others; every epoch has the same steps."""
    samples = data.find_samples(write_digits(tmp_path / "d", per_class=4))
    t = data.Transform(size=32)

    def batches(**kw):
        ds = data.train_dataset(samples, 8, t, **kw)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    all3 = batches(seed=1, epochs=3)
    assert len(all3) == 3 * data.steps_per_epoch(samples, 8) == 15
    resumed = batches(seed=1, epochs=3, initial_epoch=2)
    for (xa, ya), (xb, yb) in zip(all3[10:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(all3[0][0], all3[5][0])  # epochs differ
    assert not np.array_equal(all3[0][0], batches(seed=2, epochs=1)[0][0])
    x, y = all3[0]
    assert x.shape == (8, 32, 32, 3) and y.shape == (8, 10)
    # the models' input convention: BGR minus the Caffe mean (grey digits: equal channels)
    np.testing.assert_allclose(x[..., 0] + 104.0, x[..., 2] + 123.0, atol=1e-4)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = write_digits(tmp_path / "d", per_class=3)
    (root / "4" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root / "7" / "zz_truncated.png").write_bytes(
        (root / "7" / sorted(p.name for p in (root / "7").iterdir())[0]).read_bytes()[:60])
    samples = data.find_samples(root)
    skipped = data.Skipped()
    ds = data.train_dataset(samples, 4, data.Transform(size=32), epochs=2, skipped=skipped)
    n = sum(1 for _ in ds)
    assert n == 2 * (32 // 4)  # full epochs all the same: the lost images are refilled
    assert sorted(p.split("/")[-1] for p in skipped.errors) == ["zz_broken.png",
                                                                 "zz_truncated.png"]
    val = data.eval_dataset(samples, 5, data.Transform(size=32), skipped=data.Skipped())
    assert sum(len(y) for _, y in val) == 30


def test_typical_size_follows_the_images(tmp_path):
    small = data.find_samples(write_digits(tmp_path / "d", per_class=2))
    assert data.typical_size(small) == 32
    for c in ("a", "b"):
        _image(tmp_path / "big" / c / "x.jpg", size=(500, 375))
    assert data.typical_size(data.find_samples(tmp_path / "big")) == 224


def test_keras_mixup_cutmix_and_randaugment_run_in_the_pipeline(tmp_path):
    from senet.training import Recipe

    samples = data.find_samples(write_digits(tmp_path / "d", per_class=4))
    augment = Recipe(mixup=0.4, cutmix=1.0, randaugment=True).augment(seed=0)
    plain = data.train_dataset(samples, 8, data.Transform(size=32), seed=0)
    mixed = data.train_dataset(samples, 8, data.Transform(size=32), seed=0, augment=augment)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(mixed))
    assert x1.shape == x0.shape and y1.shape == y0.shape
    np.testing.assert_allclose(y1.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert (y1.numpy().max(axis=1) < 1.0).any()  # soft labels: images were mixed
    assert not np.allclose(x1.numpy(), x0.numpy())
