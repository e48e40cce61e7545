"""How much of a grouped net's Keras-on-JAX forward its grouped 3x3 convs take, and whether
senet's way of running them (`senet.blocks.grouped_chunks`: a few dense convs with
block-diagonal kernels) is the fastest of the ways tried.

    KERAS_BACKEND=jax python benchmarks/grouped_convs.py [--model senet154] [--batch-size 16]

For each distinct grouped conv of the model (shape, stride; read from the built model):
XLA's own grouped convolution, senet's chunks, the chunk counts around senet's choice, and an
im2col form (patches, then one batched matrix product per group). Then the whole forward
(`predict_on_batch`) in the same process, so that the grouped convs' share is a ratio within
one run. Median of 5 calls after one warm-up; random inputs and kernels.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np


def median_ms(f, *args):
    import jax

    jax.block_until_ready(f(*args))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="senet154")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp
    import keras
    from jax import lax

    from senet import blocks
    from senet.models import create_model

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    with blocks.weights_to_come():
        model = create_model(args.model, weights=None)
    convs = collections.Counter()
    for layer in model.layers:
        if isinstance(layer, blocks.Conv2D) and layer.groups > 1:
            _, h, w, c = layer.input.shape
            convs[(h, c, layer.filters, layer.groups, layer.strides[0], layer.padding)] += 1

    rng = np.random.default_rng(0)
    n = args.batch_size
    dn = ("NHWC", "HWIO", "NHWC")
    total = {"xla": 0.0, "senet": 0.0}
    print(f"{args.model}, batch {n}: each distinct grouped conv, ms per call")
    for (h, c, f, g, s, pad), count in sorted(convs.items()):
        x = jnp.asarray(rng.random((n, h, h, c), np.float32))
        k = jnp.asarray(rng.normal(0, 0.1, (3, 3, c // g, f)).astype(np.float32))
        layer = blocks.Conv2D(f, 3, strides=s, padding=pad, groups=g)
        layer.build((None, h, h, c))
        ours = blocks.grouped_chunks(g, c // g)

        def chunked(x, k, chunks):
            layer_chunks = blocks.grouped_chunks
            blocks.grouped_chunks = lambda *a: chunks
            try:
                return layer.convolution_op(x, k)
            finally:
                blocks.grouped_chunks = layer_chunks

        def xla(x, k):
            return lax.conv_general_dilated(x, k, (s, s), pad.upper(), dimension_numbers=dn,
                                            feature_group_count=g)

        def im2col(x, k):
            p = lax.conv_general_dilated_patches(x, (3, 3), (s, s), pad.upper(),
                                                 dimension_numbers=dn)  # channel-major
            m, ho, wo = p.shape[0], p.shape[1], p.shape[2]
            p = p.reshape(m * ho * wo, g, (c // g) * 9)
            kk = k.reshape(3, 3, c // g, g, f // g).transpose(3, 2, 0, 1, 4)
            y = jnp.einsum("mgk,gko->mgo", p, kk.reshape(g, (c // g) * 9, f // g))
            return y.reshape(m, ho, wo, f)

        want = np.asarray(jax.jit(xla)(x, k))
        row = {"xla": median_ms(jax.jit(xla), x, k)}
        for chunks in sorted({max(1, ours // 2), ours, min(g, ours * 2)}):
            fn = jax.jit(lambda x, k, chunks=chunks: chunked(x, k, chunks))
            got = np.asarray(fn(x, k))
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
            row[f"{chunks} chunks" + (" (senet)" if chunks == ours else "")] = median_ms(fn, x, k)
        assert np.abs(np.asarray(jax.jit(im2col)(x, k)) - want).max() <= 1e-4 * np.abs(want).max()
        row["im2col"] = median_ms(jax.jit(im2col), x, k)
        total["xla"] += count * row["xla"]
        total["senet"] += count * row[f"{ours} chunks (senet)"]
        print(f"  {h}x{h}x{c} -> {f}, {g} groups, stride {s}, x{count}: "
              + ", ".join(f"{name} {ms:.1f}" for name, ms in row.items()), flush=True)

    x = rng.random((n, *model.input_shape[1:]), np.float32)
    forward = median_ms(lambda x: model.predict_on_batch(x), x)
    print(f"whole forward (predict_on_batch): {forward:.0f} ms; its grouped convs as senet runs "
          f"them: {total['senet']:.0f} ms ({total['senet'] / forward:.0%}), as XLA's grouped "
          f"convolution: {total['xla']:.0f} ms")


if __name__ == "__main__":
    main()
