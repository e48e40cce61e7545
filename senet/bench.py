"""Inference throughput of a model on the current Keras backend (for `benchmarks/` and the CLI)."""

from __future__ import annotations

import statistics
import time

import numpy as np


def run(name, batch_size=8, size=224, warmup=3, iters=10, include_top=True):
    """Time `predict_on_batch` on random inputs; returns a dict of measured numbers.

    `predict_on_batch` is the compiled inference path of each backend (tf.function,
    jax.jit, torch no-grad), so this measures what `model.predict` users get.
    """
    import keras

    from senet.models import create_model

    channels_first = keras.config.image_data_format() == "channels_first"
    shape = (3, size, size) if channels_first else (size, size, 3)
    model = create_model(name, include_top=include_top, input_shape=shape)
    x = np.random.default_rng(0).normal(size=(batch_size, *shape)).astype("float32")
    for _ in range(warmup):
        model.predict_on_batch(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "model": name,
        "backend": keras.backend.backend(),
        "batch_size": batch_size,
        "size": size,
        "images_per_s": batch_size / median,
        "latency_ms_median": 1000 * median,
        "latency_ms_p95": 1000 * float(np.percentile(times, 95)),
        "iters": iters,
    }
