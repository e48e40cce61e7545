"""Training data: finding a dataset's images and classes, and streaming them through tf.data.

A dataset is either class sub-folders (`DIR/<class>/*.jpg`, torchvision's ImageFolder and
Keras' `image_dataset_from_directory` layout) or a flat folder with a label file
(`name label` per line, the label a class name), as `senet evaluate` reads them. Only the
file list is held in memory; images are decoded on the fly by Pillow (`senet.images`, so
every format and colour mode `senet predict` reads trains the same way) in tf.data's
parallel map, which runs on every Keras backend.

Randomness is a pure function of (seed, epoch, image index): the epoch's order comes from a
stateless shuffle and each image's crop and flip from its own generator. An epoch therefore
yields the same batches whenever it runs, which is what makes `--resume` exact and lets
several workers agree on the data without talking to each other.

An image that cannot be read is skipped and counted (`Skipped`), never a crash; the epoch
wraps around to its start to fill the batches it lost, so every epoch has the same steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading

import numpy as np

from senet.errors import DataError
from senet.images import (DEFAULT_CROP_PCT, EXTENSIONS, INTERPOLATIONS, eval_transform, load_pil,
                          read_label_file)

SCALE = (0.08, 1.0)  # random-resized crop of the paper (Inception-style augmentation)
RATIO = (3 / 4, 4 / 3)


@dataclasses.dataclass
class Samples:
    """The images of a dataset and their classes (indices into `class_names`)."""

    root: str
    paths: list
    labels: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index) -> "Samples":
        index = np.asarray(index, dtype=np.int64)
        return Samples(self.root, [self.paths[i] for i in index], self.labels[index],
                       self.class_names)


def _is_image(name) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def _folder_images(folder) -> list:
    """Image files under `folder`, recursively, sorted (hidden files and folders skipped)."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(top, f) for f in sorted(files) if _is_image(f))
    return found


def find_samples(root, labels=None, class_names=None) -> Samples:
    """The dataset at `root`: class sub-folders, or a flat folder with a `labels` file.

    `class_names` (the training set's) fixes the classes and their order, for a validation
    set: it must have the same classes. Raises DataError for anything that cannot train.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        what = "not a directory" if os.path.exists(root) else "no such directory"
        raise DataError(f"{root}: {what}; pass a folder of class sub-folders (or of images "
                        "with --labels FILE).")
    if labels is not None:
        pairs = _read_label_file(labels, root)
    else:
        pairs = _read_class_folders(root)
    names = sorted({c for _, c in pairs})
    if class_names is not None:
        missing = sorted(set(class_names) - set(names))
        extra = sorted(set(names) - set(class_names))
        if missing or extra:
            parts = []
            if extra:
                parts.append(f"classes the training set lacks: {_some(extra)}")
            if missing:
                parts.append(f"training classes it lacks: {_some(missing)}")
            raise DataError(f"{root}: its classes differ from the training set's ("
                            f"{'; '.join(parts)}); give both the same class folders.")
        names = list(class_names)
    elif len(names) < 2:
        raise DataError(f"{root}: only one class ({names[0]!r}, {len(pairs)} images); a "
                        "classifier needs at least two (one sub-folder per class).")
    index = {c: i for i, c in enumerate(names)}
    return Samples(root, [p for p, _ in pairs], np.array([index[c] for _, c in pairs], np.int32),
                   names)


def _some(items, n=5) -> str:
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _read_class_folders(root) -> list:
    pairs, loose = [], 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            pairs.extend((p, entry.name) for p in _folder_images(entry.path))
        elif _is_image(entry.name):
            loose += 1
    if not pairs:
        if loose:
            raise DataError(f"{root}: {loose} images but no class sub-folders; put each class's "
                            "images in a sub-folder named after it, or pass --labels FILE "
                            "('name label' per line).")
        raise DataError(f"{root}: no images found (expected class sub-folders such as "
                        f"{os.path.join(root, 'cat', '0001.jpg')}).")
    return pairs


def _read_label_file(path, root) -> list:
    """(image path, class name) of each `name label` line of `path` (names relative to root)."""
    pairs = [(os.path.join(root, name), label) for _, name, label in read_label_file(path)]
    if not pairs:
        raise DataError(f"{path}: no 'file label' lines.")
    absent = [p for p, _ in pairs if not os.path.exists(p)]
    if len(absent) == len(pairs):
        raise DataError(f"none of the {len(pairs)} files listed in {path} is in {root}.")
    return sorted(pairs)


def split(samples: Samples, fraction: float, seed: int = 0) -> tuple[Samples, Samples]:
    """(train, validation): `fraction` of each class held out, the same for a given seed."""
    if not 0 < fraction < 1:
        raise DataError(f"--val-split must be between 0 and 1 (got {fraction:g}).")
    rng = np.random.default_rng([seed, 7])
    val = []
    for c in range(samples.num_classes):
        members = np.flatnonzero(samples.labels == c)
        k = int(round(fraction * len(members)))
        if k >= len(members) and len(members):
            k = len(members) - 1  # keep at least one training image per class
        val.extend(rng.permutation(members)[:k].tolist())
    if not val:
        raise DataError(f"--val-split {fraction:g} of {len(samples)} images holds out none; "
                        "use a larger fraction or a --val folder.")
    val = np.sort(np.array(val))
    train = np.setdiff1d(np.arange(len(samples)), val)
    return samples.subset(train), samples.subset(val)


def default_scale_min(size: int) -> float:
    """The smallest random crop (fraction of the area): the paper's 0.08 at 224 px and up;
    smaller inputs get larger crops (0.08 x 224 / size, at most 0.5), since 8% of a 32 px
    image is a few pixels of the object, not a view of it. Digits at 32 px: 97-98% with
    0.5, 95% with 0.08 (benchmarks/train_digits.py)."""
    return float(min(0.5, max(SCALE[0], SCALE[0] * 224 / size)))


def typical_size(samples: Samples, n=64, lo=32, hi=224) -> int:
    """The median shorter side of (up to) `n` images, rounded to 32 px within [lo, hi].

    The default training size from scratch: small images are not blown up to 224 px.
    Reads image headers only.
    """
    from PIL import Image

    sides = []
    for p in samples.paths[:: max(1, len(samples) // n)][:n]:
        try:
            with Image.open(p) as img:
                sides.append(min(img.size))
        except Exception:  # noqa: BLE001 - unreadable files are counted when training
            continue
    if not sides:
        return hi
    return int(min(hi, max(lo, 32 * round(float(np.median(sides)) / 32))))


@dataclasses.dataclass
class MirrorCheck:
    """How well tiny thumbnails recognise their class (nearest neighbour among the others),
    as they are and mirrored; `chance`: the largest class's share of the sample."""

    images: int
    side: int  # the thumbnails' side, pixels
    own: float
    mirrored: float
    chance: float

    @property
    def mirror_changes_class(self) -> bool:
        """The thumbnails carry the class (20 points above chance or more) and a mirror image
        loses more than half of that: mirroring makes another class, as for digits or text."""
        signal = self.own - self.chance
        return signal >= 0.2 and self.own - self.mirrored > 0.5 * signal


def mirror_check(samples: Samples, n=1000, side=16) -> MirrorCheck | None:
    """Are mirror images of the training images still their class? Measured on up to `n`
    images (spread over the file list) as `side` x `side` greyscale thumbnails, each matched
    to its most correlated other thumbnail, then its mirror image matched the same way.
    Pixels say little about photographs (near chance, so the answer is "no evidence", flips
    stay on) and much about digits, where 99% of the images match their class and 36% of
    their mirror images do (scikit-learn's digits). None: too few readable images (fewer
    than two per class on average)."""
    from PIL import Image

    index = np.unique(np.linspace(0, len(samples) - 1, min(n, len(samples))).astype(int))
    thumbs, kept = [], []
    for path, label in zip([samples.paths[i] for i in index], samples.labels[index]):
        try:
            img = load_pil(path, min_side=side).convert("L").resize((side, side),
                                                                    Image.Resampling.BILINEAR)
        except Exception:  # noqa: BLE001 - unreadable files are counted when training
            continue
        a = np.asarray(img, np.float32)
        thumbs.append(np.stack([a, a[:, ::-1]]).reshape(2, -1))
        kept.append(label)
    if len(kept) < 2 * samples.num_classes:
        return None
    t = np.stack(thumbs)  # (images, 2, pixels)
    t -= t.mean(axis=2, keepdims=True)
    t /= np.linalg.norm(t, axis=2, keepdims=True) + 1e-6
    kept = np.array(kept)
    own, mirrored = t[:, 0], t[:, 1]
    result = []
    for queries in (own, mirrored):
        sim = queries @ own.T
        np.fill_diagonal(sim, -np.inf)  # not the image itself
        result.append(float((kept[sim.argmax(axis=1)] == kept).mean()))
    chance = float(np.bincount(kept).max() / len(kept))
    return MirrorCheck(len(kept), side, result[0], result[1], chance)


def default_hflip(samples: Samples) -> tuple[float, MirrorCheck | None]:
    """The flip probability when none is given: the paper's 0.5, or 0 where `mirror_check`
    shows that a mirror image is another class (digits: 96.5-98.0% held-out with flips,
    97.7-99.0% without, benchmarks/train_digits.py)."""
    check = mirror_check(samples)
    return (0.0 if check is not None and check.mirror_changes_class else 0.5), check


# --------------------------------------------------------------------------- transforms

def random_resized_crop_box(width, height, rng, scale=SCALE, ratio=RATIO):
    """(left, top, right, bottom) of a random crop of `scale` x the area at aspect `ratio`.

    The Inception / torchvision sampling: ten tries at a random area and log-uniform aspect,
    else the central crop at the nearest allowed aspect.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(img, size, rng, scale=SCALE, ratio=RATIO, hflip=0.5,
                    interpolation="bilinear") -> np.ndarray:
    """Random-resized crop to size x size, mirrored with probability `hflip`; float32 RGB."""
    box = random_resized_crop_box(img.size[0], img.size[1], rng, scale, ratio)
    out = np.asarray(img.resize((size, size), INTERPOLATIONS[interpolation], box=box),
                     dtype=np.float32)
    if hflip > 0 and rng.random() < hflip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class Skipped:
    """Images that could not be read, counted as the pipeline meets them (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.errors = {}  # path -> message, first time seen

    def add(self, path, message):
        with self.lock:
            self.errors.setdefault(path, message)

    def __len__(self):
        return len(self.errors)


@dataclasses.dataclass
class Transform:
    """How images become model inputs, for training and for evaluation."""

    size: int = 224
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = "bilinear"
    scale: tuple = SCALE
    ratio: tuple = RATIO
    hflip: float = 0.5  # probability of a horizontal flip (0: never, e.g. digits and text)


def _decoder(samples: Samples, transform: Transform, training: bool, seed: int,
             skipped: Skipped):
    """index, epoch -> (RGB float32 image, ok): Pillow decoding for tf.numpy_function."""
    from senet.errors import ImageError

    blank = np.zeros((transform.size, transform.size, 3), np.float32)

    def decode(index, epoch):
        path = samples.paths[int(index)]
        try:
            img = load_pil(path)
            if training:
                rng = np.random.default_rng([seed, int(epoch), int(index)])
                out = train_transform(img, transform.size, rng, transform.scale,
                                      transform.ratio, transform.hflip, transform.interpolation)
            else:
                out = eval_transform(img, transform.size, transform.crop_pct,
                                     transform.interpolation)
            return out, True
        except ImageError as err:
            skipped.add(path, str(err))
            return blank, False

    return decode


def _ok(image, label, ok):
    return ok


def _without_ok(image, label, ok):
    return image, label


def _to_model_input(images):
    """RGB 0-255 batch -> the models' input (`senet.preprocess_input`), in tf ops."""
    import keras
    import tensorflow as tf

    from senet.variants import CAFFE_MEAN_BGR

    x = tf.reverse(images, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    if keras.config.image_data_format() == "channels_first":
        x = tf.transpose(x, (0, 3, 1, 2))
    return x


def steps_per_epoch(samples: Samples, batch_size: int) -> int:
    return len(samples) // batch_size


def train_dataset(samples: Samples, batch_size: int, transform: Transform, *, seed: int = 0,
                  epochs: int = 1, initial_epoch: int = 0, skipped: Skipped | None = None,
                  augment=None, input_context=None, parallel=None):
    """Training batches (x, one-hot y) for epochs `initial_epoch`..`epochs - 1`, in order.

    Each epoch is `len(samples) // batch_size` full batches of a fresh stateless shuffle;
    pass it to `model.fit(..., steps_per_epoch=steps_per_epoch(samples, batch_size))`.
    `augment`: a callable on a batch dict {"images", "labels"} (RGB 0-255, one-hot), e.g.
    Keras' MixUp / CutMix / RandAugment layers. `input_context`: tf.distribute's, for
    `strategy.distribute_datasets_from_function`: this pipeline keeps every n-th image of
    each epoch's order (its worker's part) and batches per replica, so the replicas' batches
    together are the global batch of `batch_size`. `parallel`: decoding calls in flight
    (default: tf.data's autotuning).
    """
    import tensorflow as tf

    steps = steps_per_epoch(samples, batch_size)
    if steps < 1:
        raise DataError(f"{samples.root}: {len(samples)} images make no full batch of "
                        f"{batch_size}; lower --batch-size.")
    skipped = skipped if skipped is not None else Skipped()
    decode = _decoder(samples, transform, True, seed, skipped)
    n, k, size = len(samples), samples.num_classes, transform.size
    labels = tf.constant(samples.labels)
    parallel = parallel or tf.data.AUTOTUNE
    per_replica, local_replicas = batch_size, 1
    if input_context is not None:
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines

    def load(index, epoch):
        image, ok = tf.numpy_function(decode, [index, epoch], [tf.float32, tf.bool],
                                      stateful=False)
        image.set_shape((size, size, 3))
        return image, tf.one_hot(tf.gather(labels, index), k), ok

    def epoch_data(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        ds = tf.data.Dataset.from_tensor_slices(order)
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.map(lambda i: load(i, epoch), num_parallel_calls=parallel, deterministic=True)
        ds = ds.filter(_ok).map(_without_ok)
        return ds.repeat().batch(per_replica, drop_remainder=True).take(steps * local_replicas)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_data)
    if augment is not None:
        def aug(x, y):
            out = augment({"images": x, "labels": y})
            return out["images"], out["labels"]
        ds = ds.map(aug)
    ds = ds.map(lambda x, y: (_to_model_input(x), y))
    return _options(ds).prefetch(2)


def eval_dataset(samples: Samples, batch_size: int, transform: Transform, *,
                 skipped: Skipped | None = None, parallel=None):
    """Evaluation batches (x, one-hot y) in file order with `senet predict`'s transform."""
    import tensorflow as tf

    skipped = skipped if skipped is not None else Skipped()
    decode = _decoder(samples, transform, False, 0, skipped)
    k, size = samples.num_classes, transform.size
    labels = tf.constant(samples.labels)

    def load(index):
        image, ok = tf.numpy_function(decode, [index, tf.constant(0, tf.int64)],
                                      [tf.float32, tf.bool], stateful=False)
        image.set_shape((size, size, 3))
        return image, tf.one_hot(tf.gather(labels, index), k), ok

    ds = tf.data.Dataset.range(len(samples))
    ds = ds.map(load, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(_ok).map(_without_ok)
    ds = ds.batch(batch_size).map(lambda x, y: (_to_model_input(x), y))
    return _options(ds).prefetch(2)


def _options(ds):
    """Our sharding is explicit (`shard=`); tf.distribute must not shard again."""
    import tensorflow as tf

    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(opts)
