"""Training and fine-tuning: the recipe as plain Keras pieces, and a job that runs it.

The pieces work with a plain `model.fit` (see `senet.data` for the input pipeline):

    from senet import data, training
    train = data.find_samples("train/")
    model = senet.create_model("se_resnet50", weights="imagenet", classes=train.num_classes,
                               classifier_activation=None)      # logits; new head
    recipe = training.Recipe(epochs=10, batch_size=64)
    steps = data.steps_per_epoch(train, recipe.batch_size)
    model.compile(optimizer=recipe.optimizer(steps), loss=recipe.loss(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    model.fit(data.train_dataset(train, 64, data.Transform(224), epochs=10),
              epochs=10, steps_per_epoch=steps)

`train(...)` (and `senet train`) adds what a job needs: the output directory, checkpoints
every epoch and an exact `resume`, best / last weights in the project's format (with class
names and preprocessing, so `senet predict` and `senet evaluate` use them directly), logs,
curves and a summary, and the distribution engines (tf.distribute, keras.distribution).

The recipe follows the paper and the reference trainers (timm, torchvision): SGD with
momentum 0.9, learning rate 0.1 per 256 images, weight decay 1e-4 on conv and dense kernels
only, added to the gradient as PyTorch's SGD does, cosine (or step) schedule after a linear
warm-up, label smoothing 0.1, BatchNorm momentum 0.9 (PyTorch's 0.1; `senet.blocks`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings

import keras
import numpy as np
from keras import ops

from senet.errors import ArgumentError, DataError, SenetError, WriteError, one_line

CHECKPOINT = "checkpoint.h5"  # model + optimizer + progress, rewritten every epoch
BEST, LAST = "best.weights.h5", "last.weights.h5"
FREEZE = ("none", "backbone", "bn")
SCHEDULES = ("cosine", "step")


class ResumeError(SenetError, ValueError):
    """An output directory that cannot be resumed, or must not be overwritten."""


# --------------------------------------------------------------------------- the recipe

@dataclasses.dataclass
class Recipe:
    """Every optimisation setting, with defaults that train from scratch and fine-tune well."""

    epochs: int = 30
    batch_size: int = 64  # per optimizer step, over all devices (micro-batches x accumulate)
    lr: float | None = None  # peak learning rate; default lr_per_256 x batch_size / 256
    lr_per_256: float = 0.1  # Goyal et al.; the paper used 0.6 for 1024 (0.15)
    head_lr: float | None = None  # the classifier's peak rate (fine-tuning); default: lr
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    step_epochs: int = 30  # "step": x gamma every step_epochs (the paper: 0.1 every 30)
    gamma: float = 0.1
    min_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    accumulate: int = 1  # micro-batches per step, when batch_size does not fit at once
    freeze: str = "none"  # "backbone": train the head only; "bn": freeze BatchNorm layers
    mixup: float = 0.0  # alpha of Keras' MixUp (0: off)
    cutmix: float = 0.0  # alpha of Keras' CutMix (0: off)
    randaugment: bool = False  # Keras' RandAugment

    def check(self):
        """ArgumentError for settings that cannot train."""
        def bad(what):
            raise ArgumentError(what)
        if self.epochs < 1:
            bad(f"--epochs must be at least 1 (got {self.epochs}).")
        if self.batch_size < 1:
            bad(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            bad(f"--accumulate {self.accumulate} must divide --batch-size {self.batch_size} "
                "(the batch is split into that many micro-batches).")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(f"--{name.replace('_', '-')} must be positive (got {value:g}).")
        if self.schedule not in SCHEDULES:
            bad(f"--schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r}).")
        if self.freeze not in FREEZE:
            bad(f"--freeze must be one of {', '.join(FREEZE)} (got {self.freeze!r}).")
        if not 0 <= self.label_smoothing < 1:
            bad(f"--label-smoothing must be in [0, 1) (got {self.label_smoothing:g}).")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.mixup < 0 or self.cutmix < 0:
            bad("--weight-decay, --warmup-epochs, --mixup and --cutmix cannot be negative.")
        if not 0 <= self.momentum < 1:
            bad(f"--momentum must be in [0, 1) (got {self.momentum:g}).")
        return self

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accumulate

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.lr_per_256 * self.batch_size / 256

    def schedule_fn(self, steps_per_epoch: int):
        """The learning-rate schedule over Keras steps (micro-batches)."""
        return WarmupSchedule(self.peak_lr, steps_per_epoch * self.epochs,
                              int(round(self.warmup_epochs * steps_per_epoch)), self.schedule,
                              self.step_epochs * steps_per_epoch, self.gamma, self.min_lr)

    def optimizer(self, steps_per_epoch: int):
        head_scale = (self.head_lr / self.peak_lr) if self.head_lr else 1.0
        return SGD(self.schedule_fn(steps_per_epoch), momentum=self.momentum,
                   nesterov=self.nesterov, kernel_decay=self.weight_decay,
                   head_lr_scale=head_scale,
                   gradient_accumulation_steps=self.accumulate if self.accumulate > 1 else None)

    def loss(self):
        import keras

        return keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=self.label_smoothing)

    def augment(self, seed: int):
        """Keras' batch augmentation layers the recipe asks for, as one callable (or None)."""
        import keras

        steps = []
        if self.randaugment:
            ra = keras.layers.RandAugment(value_range=(0, 255), seed=seed)
            steps.append(lambda d: {"images": ra(d["images"]), "labels": d["labels"]})
        if self.mixup:
            steps.append(keras.layers.MixUp(alpha=self.mixup, seed=seed + 1))
        if self.cutmix:
            steps.append(keras.layers.CutMix(factor=self.cutmix, seed=seed + 2))
        if not steps:
            return None

        def augment(batch):
            for step in steps:
                batch = step(batch)
            return batch

        return augment


@keras.saving.register_keras_serializable(package="senet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `min_lr` at
    `total`, or x `gamma` every `step` steps (counted from the start, as the paper)."""

    def __init__(self, peak, total, warmup=0, kind="cosine", step=1, gamma=0.1, min_lr=0.0):
        self.peak, self.total, self.warmup = float(peak), int(total), int(warmup)
        self.kind, self.step, self.gamma, self.min_lr = kind, max(1, int(step)), gamma, min_lr

    def __call__(self, step):
        s = ops.cast(step, "float32")
        warm = self.peak * (s + 1.0) / max(self.warmup, 1)
        if self.kind == "cosine":
            span = max(self.total - self.warmup, 1)
            t = ops.clip((s - self.warmup) / span, 0.0, 1.0)
            main = self.min_lr + 0.5 * (self.peak - self.min_lr) * (1.0 + ops.cos(math.pi * t))
        else:
            main = self.peak * ops.power(self.gamma, ops.floor(s / self.step))
        return ops.where(s < self.warmup, warm, main)

    def get_config(self):
        return dict(peak=self.peak, total=self.total, warmup=self.warmup, kind=self.kind,
                    step=self.step, gamma=self.gamma, min_lr=self.min_lr)


@keras.saving.register_keras_serializable(package="senet")
class SGD(keras.optimizers.SGD):
    """Keras' SGD with weight decay on kernels only, added to the gradient (PyTorch's
    coupled decay, so the paper's 1e-4 means what it meant), and a learning-rate scale
    for the classifier ("classifier/..." variables): a separate head rate when
    fine-tuning. Scaling the rate of a momentum SGD per variable is exact."""

    def __init__(self, learning_rate=0.01, kernel_decay=0.0, head_lr_scale=1.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.kernel_decay, self.head_lr_scale = float(kernel_decay), float(head_lr_scale)

    def build(self, variables):
        super().build(variables)
        self._decayed = {self._var_key(v) for v in variables if v.path.endswith("/kernel")}
        self._head = {self._var_key(v) for v in variables if v.path.startswith("classifier/")}

    def update_step(self, gradient, variable, learning_rate):
        key = self._var_key(variable)
        if self.kernel_decay and key in self._decayed:
            gradient = ops.add(gradient, ops.cast(ops.multiply(variable, self.kernel_decay),
                                                  gradient.dtype))
        if self.head_lr_scale != 1.0 and key in self._head:
            learning_rate = ops.multiply(learning_rate, self.head_lr_scale)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "kernel_decay": self.kernel_decay,
                "head_lr_scale": self.head_lr_scale}


def freeze(model, what: str):
    """`"backbone"`: only the classifier trains (BatchNorm layers then run on their moving
    statistics, Keras' rule for frozen BN); `"bn"`: BatchNorm layers keep their statistics
    and affine weights; `"none"`: everything trains."""
    import keras

    for layer in model.layers:
        if what == "backbone" and layer.name != "classifier" and layer.weights:
            layer.trainable = False
        elif what == "bn" and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def synchronize_batchnorm(model):
    """BatchNorm statistics over the global batch (TensorFlow strategies' all-reduce).

    Keras reads `synchronized` when the layer runs, so setting it on a built model works.
    On JAX with DataParallel the batch is one sharded array: statistics are global anyway.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


# --------------------------------------------------------------------------- distribution

class Distribution:
    """Which engine spreads the global batch over devices, and this process's role."""

    def __init__(self, kind="none", devices=None):
        self.kind, self.strategy = kind, None
        self.num_workers, self.worker = 1, 0
        self.replicas = 1
        import keras

        backend = keras.backend.backend()
        if backend == "jax" and os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") \
                and kind in ("auto", "data-parallel"):
            keras.distribution.initialize()  # jax.distributed, before JAX starts its devices
        if kind == "auto":
            kind = self.kind = _auto_kind(backend)
        if kind == "none":
            return
        if backend == "tensorflow" and kind in ("mirrored", "multiworker"):
            import tensorflow as tf

            if kind == "mirrored":
                self.strategy = tf.distribute.MirroredStrategy(devices)
            else:
                self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
                resolver = self.strategy.cluster_resolver
                self.num_workers = max(1, len(resolver.cluster_spec().as_dict().get("worker", [])))
                self.worker = resolver.task_id or 0
            self.replicas = self.strategy.num_replicas_in_sync
        elif backend == "jax" and kind == "data-parallel":
            import jax

            self.strategy = keras.distribution.DataParallel(devices=devices or jax.devices())
            keras.distribution.set_distribution(self.strategy)
            self.replicas = len(devices or jax.devices())
            self.num_workers, self.worker = jax.process_count(), jax.process_index()
        else:
            supported = {"tensorflow": "mirrored or multiworker", "jax": "data-parallel",
                         "torch": "none (Keras trains on one device with PyTorch)"}[backend]
            raise ArgumentError(f"--distribute {kind} is not available on the {backend} "
                                f"backend; it supports {supported}.")

    @property
    def chief(self) -> bool:
        return self.worker == 0

    def scope(self):
        import contextlib

        return self.strategy.scope() if hasattr(self.strategy, "scope") else contextlib.nullcontext()

    def describe(self) -> str:
        if self.kind == "none":
            return "one device"
        return f"{self.kind}, {self.replicas} replicas, {self.num_workers} worker(s)"


def _auto_kind(backend) -> str:
    if backend == "tensorflow":
        if os.environ.get("TF_CONFIG"):
            return "multiworker"
        import tensorflow as tf

        return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if backend == "jax":
        import jax

        accel = [d for d in jax.devices() if d.platform != "cpu"]
        return "data-parallel" if len(accel) > 1 or jax.process_count() > 1 else "none"
    return "none"


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, model, optimizer, state: dict):
    """Every model and optimizer variable plus `state` (JSON), written atomically."""
    import h5py
    import keras

    from senet._io import atomic_path

    try:
        with atomic_path(path, suffix=".h5") as tmp:
            with h5py.File(tmp, "w") as f:
                for group, variables in (("model", model.variables),
                                         ("optimizer", optimizer.variables)):
                    g = f.create_group(group)
                    for i, v in enumerate(variables):
                        d = g.create_dataset(str(i), data=np.asarray(
                            keras.ops.convert_to_numpy(v.value)))
                        d.attrs["path"] = v.path
                f.attrs["state"] = json.dumps(state)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
    except OSError as err:
        raise WriteError(f"Cannot write {path}: {err.strerror or err}. The previous checkpoint "
                         "is intact; free some disk space and --resume.") from None


def read_state(path) -> dict | None:
    """The progress recorded in a checkpoint (None if there is none)."""
    import h5py

    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["state"])
    except (OSError, KeyError, ValueError) as err:
        raise ResumeError(f"{path}: the checkpoint cannot be read ({one_line(err)}); it was not "
                          "written by senet train, or is damaged.") from None


def load_checkpoint(path, model, optimizer):
    """Set every model and optimizer variable from the checkpoint at `path`."""
    import h5py

    with h5py.File(path, "r") as f:
        for group, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
            g = f[group]
            if len(g) != len(variables):
                raise ResumeError(f"{path}: the checkpoint has {len(g)} {group} variables, this "
                                  f"run has {len(variables)}; it comes from another setup "
                                  "(model, --freeze, --accumulate or --precision).")
            for i, v in enumerate(variables):
                value = g[str(i)][()]
                if tuple(value.shape) != tuple(v.shape):
                    raise ResumeError(f"{path}: {g[str(i)].attrs['path']} has shape "
                                      f"{value.shape}, the model needs {tuple(v.shape)}.")
                v.assign(value)


def weights_digest(model) -> str:
    """sha256 of every model variable: workers that agree have the same digest."""
    import hashlib

    h = hashlib.sha256()
    for v in model.variables:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v.value), np.float32).tobytes())
    return h.hexdigest()


def weights_and_meta(model, meta):
    """({layer: arrays}, meta) for `senet.weights.native.save`."""
    import keras

    weights = {l.name: [np.asarray(keras.ops.convert_to_numpy(w)) for w in l.weights]
               for l in model.layers if l.weights}
    return weights, meta


# --------------------------------------------------------------------------- callbacks

def _make_callbacks():
    import keras

    class Progress(keras.callbacks.Callback):
        """One line per epoch (live on a terminal): loss, accuracy, learning rate, images/s."""

        def __init__(self, steps, batch, epochs, live=None):
            super().__init__()
            self.steps, self.batch, self.epochs, self.live = steps, batch, epochs, live

        def on_epoch_begin(self, epoch, logs=None):
            from senet._progress import Progress as Bar

            self.epoch = epoch
            self.bar = Bar(self.steps * self.batch, label=f"epoch {epoch + 1}/{self.epochs}",
                           live=self.live)
            self.start = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            self.bar.update(self.batch, f"  loss {float(logs.get('loss', 0)):.4f}  acc "
                                        f"{float(logs.get('accuracy', 0)):.4f}  lr {self.lr():.4g}")

        def lr(self):
            opt = self.model.optimizer
            inner = getattr(opt, "inner_optimizer", opt)
            return float(keras.ops.convert_to_numpy(inner._get_current_learning_rate()))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.monotonic() - self.start
            rate = self.steps * self.batch / max(seconds, 1e-9)
            logs["lr"] = self.lr()
            logs["images_per_s"] = rate
            logs["seconds"] = seconds
            self.bar.clear()
            if not self.bar.done:  # no batch at all: EpochEnd reports why
                return
            parts = [f"epoch {epoch + 1}/{self.epochs}", f"loss {logs.get('loss', 0):.4f}",
                     f"acc {logs.get('accuracy', 0):.4f}"]
            if "val_accuracy" in logs:
                parts += [f"val_loss {logs['val_loss']:.4f}", f"val_acc {logs['val_accuracy']:.4f}"]
            parts += [f"lr {logs['lr']:.4g}", f"{rate:.1f} images/s", f"{seconds:.1f} s"]
            print("  ".join(parts), flush=True)

    class EpochEnd(keras.callbacks.Callback):
        """After each epoch: best / last weights, the CSV log, then the checkpoint (last, so
        a crash in between only repeats the epoch)."""

        def __init__(self, job, steps):
            super().__init__()
            self.job, self.steps = job, steps

        def on_epoch_begin(self, epoch, logs=None):
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            if self.batches < self.steps:  # every image of the epoch failed: nothing to save
                self.job.out_of_data()
            self.job.epoch_done(self.model, epoch, dict(logs or {}))

    return Progress, EpochEnd


# --------------------------------------------------------------------------- the job

@dataclasses.dataclass
class Job:
    """Everything `train` needs; `senet train`'s options map onto it one to one."""

    data: str
    model: object  # a model name or a `senet.variants.Variant` (tests use tiny rows)
    output: str
    weights: str | None = None  # None: from scratch; "imagenet", a tag or a file: fine-tune
    labels: str | None = None
    val: str | None = None
    val_labels: str | None = None
    val_split: float = 0.0
    size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    scale_min: float | None = None  # default: data.default_scale_min(size)
    hflip: float | None = None  # horizontal-flip probability; default: the paper's 0.5, or 0
    #                     where mirror images look like other classes (data.default_hflip)
    seed: int = 0
    precision: str = "float32"
    distribute: str = "auto"
    devices: list | None = None
    sync_bn: bool = False
    resume: bool = False
    resume_epochs: int | None = None  # with resume: a new total of epochs (else the recorded)
    workers: int | None = None  # decoding calls in flight (default: autotuned)
    tensorboard: bool = True
    plot: bool = True
    verbose: bool = True
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    callbacks: list = dataclasses.field(default_factory=list)  # extra Keras callbacks

    def __post_init__(self):
        # pathlib paths welcome: the job is recorded as JSON with each checkpoint (a Path
        # there failed at the end of the first epoch)
        for name in ("data", "output", "weights", "labels", "val", "val_labels"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))


_BEFORE_KEY = {"hflip": 0.5}  # what runs recorded before these keys existed used


class _Run:
    """One training run in its output directory."""

    def __init__(self, job: Job):
        self.job = job
        self.history = []
        self.best = None
        self.best_epoch = None

    # ------------------------------------------------------------ output directory
    def check_output(self, model_name):
        job = self.job
        out = job.output
        if os.path.exists(out) and not os.path.isdir(out):
            raise WriteError(f"--output {out}: is a file, not a directory; name a directory.")
        state = read_state(os.path.join(out, CHECKPOINT))
        owner = state.get("model") if state else _weights_model(out)
        if owner is not None and owner != model_name:
            raise ResumeError(f"--output {out} holds a run of {owner}, not {model_name}; "
                              "choose another --output.")
        if job.resume:
            if state is None:
                raise ResumeError(f"--resume: {out} holds no checkpoint to resume ({CHECKPOINT} "
                                  "is written at the end of each epoch); start without --resume.")
        elif state is not None or any(os.path.exists(os.path.join(out, f)) for f in (BEST, LAST)):
            done = f" ({state['epoch']}/{state['epochs']} epochs done)" if state else ""
            raise ResumeError(f"--output {out} already holds a run of {model_name}{done}; pass "
                              "--resume to continue it, or choose another --output.")
        try:
            os.makedirs(out, exist_ok=True)
            probe = os.path.join(out, f".senet-write-test-{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as err:
            raise WriteError(f"--output {out}: cannot write there ({err.strerror or err}); "
                             "choose a writable directory.") from None
        return state

    def path(self, name):
        return os.path.join(self.job.output, name)

    # ------------------------------------------------------------ per epoch
    def out_of_data(self):
        first = next(iter(self.skipped.errors.values()), "no error recorded")
        raise DataError(f"{self.job.data}: no image could be read in an epoch "
                        f"({len(self.skipped)} unreadable; first: {first}).")

    def epoch_done(self, model, epoch, logs):
        from senet._io import atomic_write
        from senet.weights import native

        logs = {k: float(v) for k, v in logs.items()}
        logs["epoch"] = epoch + 1
        logs["skipped"] = len(self.skipped)
        self.history.append(logs)
        metric = logs.get(self.monitor)
        improved = metric is not None and (self.best is None or metric > self.best)
        if improved:
            self.best, self.best_epoch = metric, epoch + 1
        if not self.dist.chief:
            return
        meta = dict(self.meta, epoch=epoch + 1, metrics={k: logs[k] for k in logs
                                                         if "acc" in k or "loss" in k})
        weights, _ = weights_and_meta(model, meta)
        native.save(self.path(LAST), weights, meta)
        if improved:
            native.save(self.path(BEST), weights, meta)
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        with atomic_write(self.path("log.csv"), "w") as f:
            f.write(",".join(keys) + "\n")
            for row in self.history:
                f.write(",".join("" if row.get(k) is None else f"{row[k]:.6g}" for k in keys) + "\n")
        state = dict(self.config, epoch=epoch + 1, history=self.history, best=self.best,
                     best_epoch=self.best_epoch, skipped=dict(list(self.skipped.errors.items())[:100]))
        save_checkpoint(self.path(CHECKPOINT), model, model.optimizer, state)
        if len(self.skipped) and self.job.verbose:
            print(f"  {len(self.skipped)} unreadable images skipped so far (first: "
                  f"{next(iter(self.skipped.errors.values()))})", flush=True)


def _weights_model(out):
    """The model of the best / last weights in `out` (None if there are none)."""
    from senet.weights import native

    for name in (BEST, LAST):
        try:
            doc = native.read_header(os.path.join(out, name))
        except SenetError:
            continue
        if doc is not None:
            return doc["meta"].get("model")
    return None


def _precision(precision):
    policies = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
    if precision not in policies:
        raise ArgumentError(f"--precision must be one of {', '.join(policies)} (got {precision!r}).")
    keras.config.set_dtype_policy(policies[precision])


def train(job: Job) -> dict:
    """Run (or resume) the training job; returns the summary (also DIR/summary.json)."""
    policy = keras.config.dtype_policy()
    try:
        return _train(job)
    finally:  # --precision sets Keras' global policy for the build; leave it as it was
        keras.config.set_dtype_policy(policy)


def _train(job: Job) -> dict:
    from senet import data
    from senet.bench import image_shape
    from senet.models import build
    from senet.variants import get_variant
    from senet.weights import loader

    recipe = job.recipe.check()
    variant = get_variant(job.model)
    run = _Run(job)
    state = run.check_output(variant.name)
    if state is not None:  # resume: the recorded settings, whatever was passed
        saved = state["job"]
        recipe = Recipe(**state["recipe"])
        if job.resume_epochs:  # a longer (or shorter) run than recorded
            recipe.epochs = job.resume_epochs
        for key in ("labels", "val", "val_labels", "val_split", "size", "crop_pct",
                    "interpolation", "scale_min", "hflip", "seed", "precision", "weights",
                    "sync_bn"):
            # a run recorded before a key existed ran with that key's old default
            setattr(job, key, saved.get(key, _BEFORE_KEY.get(key, getattr(Job, key))))

    # ---------------------------------------------------------------- data
    train_set = data.find_samples(job.data, job.labels)
    val_set = None
    if job.val:
        val_set = data.find_samples(job.val, job.val_labels, class_names=train_set.class_names)
    elif job.val_split:
        train_set, val_set = data.split(train_set, job.val_split, job.seed)

    resolved = loader.resolve(variant, job.weights) if job.weights else None
    pre = (resolved.meta.get("preprocessing") or {}) if resolved else {}
    size = job.size or pre.get("size") or data.typical_size(train_set)
    mirror = None
    if job.hflip is None:
        job.hflip, mirror = data.default_hflip(train_set)
    transform = data.Transform(size=size, crop_pct=job.crop_pct or pre.get("crop_pct") or 0.875,
                               interpolation=job.interpolation or pre.get("interpolation")
                               or "bilinear",
                               scale=(job.scale_min or data.default_scale_min(size), 1.0),
                               hflip=job.hflip)
    # recorded as resolved, so that --resume rebuilds exactly this pipeline
    job.size, job.crop_pct, job.interpolation = size, transform.crop_pct, transform.interpolation
    job.scale_min = transform.scale[0]
    if job.verbose:
        how = f"fine-tuning {job.weights}" if job.weights else "from scratch"
        print(f"{variant.name}, {how}: {len(train_set)} training images in "
              f"{train_set.num_classes} classes" + (f", {len(val_set)} validation" if val_set
                                                    else "") + f", {size} px", flush=True)
        if mirror is not None and job.hflip == 0:
            print(f"No horizontal flips: mirror images look like other classes (of "
                  f"{mirror.images} images as {mirror.side} px thumbnails, {mirror.own:.0%} match their "
                  f"class, {mirror.mirrored:.0%} of their mirror images do); --hflip 0.5 "
                  "flips anyway.", flush=True)

    # ---------------------------------------------------------------- engine and model
    _precision(job.precision)
    dist = Distribution(job.distribute, job.devices)
    run.dist = dist
    if recipe.micro_batch % dist.replicas:
        raise ArgumentError(f"--batch-size {recipe.batch_size} (micro-batch {recipe.micro_batch}) "
                            f"does not split over {dist.replicas} devices; use a multiple.")
    steps = data.steps_per_epoch(train_set, recipe.micro_batch)
    steps -= steps % recipe.accumulate
    if steps < 1:
        raise DataError(f"{job.data}: {len(train_set)} images make no full batch of "
                        f"{recipe.batch_size}; lower --batch-size.")

    keras.utils.set_random_seed(job.seed)
    with dist.scope():
        model = build(variant, weights=job.weights, classes=train_set.num_classes,
                      input_shape=image_shape(size), classifier_activation=None)
        freeze(model, recipe.freeze)
        if job.sync_bn and dist.replicas > 1:
            synchronize_batchnorm(model)
        model.compile(optimizer=recipe.optimizer(steps), loss=recipe.loss(),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        model.optimizer.build(model.trainable_variables)
    weights_meta = getattr(model, "senet_weights", None) or {}
    if job.weights and weights_meta.get("head") != "new" and weights_meta.get("class_names") \
            and weights_meta["class_names"] != train_set.class_names:
        raise DataError(f"{job.weights} was trained on other classes ({_some_names(weights_meta)}) "
                        f"than {job.data}; its classifier cannot continue on these.")

    initial_epoch = 0
    if state is not None:
        load_checkpoint(run.path(CHECKPOINT), model, model.optimizer)
        initial_epoch = state["epoch"]
        run.history, run.best, run.best_epoch = state["history"], state["best"], state["best_epoch"]

    run.skipped = data.Skipped()
    run.monitor = "val_accuracy" if val_set is not None else "accuracy"
    run.meta = {
        "model": variant.name, "classes": train_set.num_classes,
        "class_names": list(train_set.class_names),
        "input": weights_meta.get("input", "caffe"),
        "preprocessing": {"size": size, "crop_pct": transform.crop_pct,
                          "interpolation": transform.interpolation},
        "source": {"kind": "senet train", "data": os.path.abspath(job.data),
                   "weights": job.weights, "weights_source": weights_meta.get("source")},
    }
    job_dict = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)
                if f.name not in ("recipe", "callbacks", "model")}
    job_dict["model"] = variant.name
    run.config = {"model": variant.name, "epochs": recipe.epochs,
                  "recipe": dataclasses.asdict(recipe), "job": job_dict}

    def pipeline(input_context=None):
        return data.train_dataset(train_set, recipe.micro_batch, transform, seed=job.seed,
                                  epochs=recipe.epochs, initial_epoch=initial_epoch,
                                  skipped=run.skipped, augment=recipe.augment(job.seed),
                                  input_context=input_context, parallel=job.workers)

    if hasattr(dist.strategy, "distribute_datasets_from_function"):  # tf.distribute
        train_ds = dist.strategy.distribute_datasets_from_function(pipeline)
    else:  # one device, or keras.distribution (which shards the global batch itself)
        train_ds = pipeline()
    val_ds = None
    if val_set is not None:
        val_ds = data.eval_dataset(val_set, recipe.micro_batch, transform, skipped=run.skipped,
                                   parallel=job.workers)

    Progress, EpochEnd = _make_callbacks()
    callbacks = [Progress(steps, recipe.micro_batch, recipe.epochs,
                          live=None if job.verbose else False), EpochEnd(run, steps)]
    if job.tensorboard and dist.chief and _has_tensorboard(job.verbose):
        callbacks.append(keras.callbacks.TensorBoard(run.path("tensorboard"), write_graph=False,
                                                     profile_batch=0))
    callbacks += list(job.callbacks)
    if dist.kind == "multiworker":
        _build_before_fit(model, dist, recipe.micro_batch // dist.replicas,
                          image_shape(size), train_set.num_classes)
    start = time.monotonic()
    if initial_epoch < recipe.epochs:
        if job.verbose and initial_epoch:
            print(f"resuming after epoch {initial_epoch} of {recipe.epochs}", flush=True)
        with warnings.catch_warnings():
            # Keras says so after each first pass over a dataset of unknown length (ours,
            # since unreadable images are dropped); a short training set is caught below.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_ds, epochs=recipe.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                      verbose=0, shuffle=False)
    seconds = time.monotonic() - start
    if len(run.history) < recipe.epochs and not model.stop_training:  # (not a callback's stop)
        run.out_of_data()
    run.digest = weights_digest(model)
    summary = _summary(run, recipe, train_set, val_set, size, seconds, dist)
    if dist.chief:
        _finish(run, summary)
    return summary


def _build_before_fit(model, dist, batch, shape, classes):
    """Make Keras' `fit` run under MultiWorkerMirroredStrategy (two Keras 3 bugs).

    Keras 3's `fit` reduces a first data batch across the workers only to read its shape,
    and that reduce fails under this strategy ("Attempt to convert a value (PerReplica...)
    to a Tensor", keras-team/keras#20585, tensorflow/tensorflow#72388). Built beforehand
    from shapes, the model needs no such batch. Training itself is Keras' and TensorFlow's
    own path (gradients all-reduced by the strategy).
    """
    import tensorflow as tf

    with dist.scope():
        model._symbolic_build(data_batch=(tf.zeros((batch, *shape)), tf.zeros((batch, classes))))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _fix_keras_multiworker_logs()


def _fix_keras_multiworker_logs():
    """Keras 3 averages each step's logs over the workers with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on the scalar loss and metrics ("Invalid reduction dimension 0 for
    input with 0 dimensions"). Averaged over replicas (axis=None) they are what Keras meant.
    Patched once, only for this strategy's mean reductions."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "senet_fixed", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.senet_fixed = True
    trainer.reduce_per_replica = reduce_per_replica


def _has_tensorboard(verbose) -> bool:
    try:
        import tensorboard  # noqa: F401 - Keras' callback writes through it
    except ImportError:
        if verbose:
            print("no TensorBoard log: tensorboard is not installed (pip install "
                  "'senet[train]').", flush=True)
        return False
    return True


def _some_names(meta):
    names = meta.get("class_names") or []
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _summary(run, recipe, train_set, val_set, size, seconds, dist) -> dict:
    import keras

    last = run.history[-1] if run.history else {}
    return {
        "model": run.meta["model"], "backend": keras.backend.backend(),
        "classes": train_set.num_classes, "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0, "size": size,
        "hflip": run.job.hflip,
        "epochs": recipe.epochs, "batch_size": recipe.batch_size, "peak_lr": recipe.peak_lr,
        "distribution": dist.describe(), "monitor": run.monitor, "best": run.best,
        "best_epoch": run.best_epoch, "final": {k: v for k, v in last.items()},
        "seconds_this_session": round(seconds, 1),
        "seconds_total": round(sum(r.get("seconds", 0) for r in run.history), 1),
        "skipped_images": len(run.skipped), "skipped": dict(list(run.skipped.errors.items())[:20]),
        "recipe": dataclasses.asdict(recipe), "history": run.history,
        "weights_sha256": run.digest,
        "best_weights": os.path.abspath(run.path(BEST)),
        "last_weights": os.path.abspath(run.path(LAST)),
    }


def _finish(run, summary):
    from senet._io import atomic_write

    with atomic_write(run.path("summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    if run.job.plot:
        note = plot_curves(run.history, run.path("curves.png"))
        if note and run.job.verbose:
            print(note, flush=True)
    if run.job.verbose:
        best = f"{run.monitor} {run.best:.4f} at epoch {run.best_epoch}" if run.best is not None else ""
        print(f"done: {best}; weights {run.path(BEST)} and {run.path(LAST)}", flush=True)


def plot_curves(history, path) -> str | None:
    """Loss and accuracy per epoch as a PNG (needs matplotlib); a note if it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no curves.png: matplotlib is not installed (pip install 'senet[train]')."
    from senet._io import atomic_path

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return None
