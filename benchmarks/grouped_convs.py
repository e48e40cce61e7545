"""How much of a grouped net's Keras-on-JAX forward its grouped 3x3 convs take, and whether
senet's way of running them (`senet.blocks.grouped_chunks`: a few dense convs with
block-diagonal kernels) is the fastest of the ways tried.

    KERAS_BACKEND=jax python benchmarks/grouped_convs.py [--model senet154]
        [--batch-size 16] [--precision float32|bfloat16] [--rounds 4] [--forward-only]

For each distinct grouped conv of each model (shape, stride; read from the built model):
XLA's own grouped convolution, senet's chunks and the chunk counts around senet's, an
im2col form (patches, then one batched matrix product per group), and, at most 8 input
channels a group, sums: kh*kw*cin_g elementwise products of the input's shifted slices
(each group's j-th channel repeated for the group's outputs) with kernel rows, which XLA
fuses into one loop and which do only the useful arithmetic (beyond 8 channels XLA no
longer fuses them, and they take seconds). Median of 5 calls after one warm-up, random
inputs and kernels. Then the whole forward as the Keras engine runs it
(`senet.engines._jax_forward`) against the same model with the sums wherever a group has at
most 4 input channels, compiled apart and timed alternately in one process
(`senet.bench.alternate`): the median ms of each and the median of the per-round ratios,
with their range. Alone the sums beat the chunks at 4 channels a group (SE-ResNeXt-50's
56x56 conv, bfloat16: 1.7x); in the whole forward the gain is within the noise (see the
README), so senet keeps the chunks.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
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


def _sums(layer, x, k):
    """The grouped conv of `layer` as fused elementwise sums (the docstring above)."""
    import jax.numpy as jnp
    import keras

    from senet import blocks

    k = keras.ops.convert_to_tensor(k)  # a Keras variable in a model
    (kh, kw), (sh, sw), groups = layer.kernel_size, layer.strides, layer.groups
    cin_g, cout_g = k.shape[2], k.shape[3] // groups
    dtype, x, k = x.dtype, x.astype("float32"), k.astype("float32")
    if layer.padding == "same":
        x = jnp.pad(x, [(0, 0)] + [blocks._same_padding(n, w, s) for n, w, s in
                                   zip(x.shape[1:3], (kh, kw), (sh, sw))] + [(0, 0)])
    _, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    per_group = jnp.reshape(x, (-1, h, w, groups, cin_g))
    y = 0
    for j in range(cin_g):
        xj = jnp.repeat(per_group[..., j], cout_g, axis=-1)
        for a in range(kh):
            for b in range(kw):
                y = y + xj[:, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw] * k[a, b, j]
    return y.astype(dtype)


@contextlib.contextmanager
def _grouped(chunks=None, sums=0):
    """While a conv is traced: `chunks` dense chunks a grouped conv instead of senet's
    count, and the sums wherever a group has at most `sums` input channels."""
    from senet import blocks

    saved = blocks.grouped_chunks, blocks.Conv2D._jax_grouped

    def grouped(layer, x, k):
        return _sums(layer, x, k) if k.shape[2] <= sums else saved[1](layer, x, k)

    if chunks is not None:
        blocks.grouped_chunks = lambda *a: chunks
    blocks.Conv2D._jax_grouped = grouped
    try:
        yield
    finally:
        blocks.grouped_chunks, blocks.Conv2D._jax_grouped = saved


def _layers(model, n, dtype, rng):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from senet import blocks

    convs = collections.Counter()
    for layer in model.layers:
        if isinstance(layer, blocks.Conv2D) and layer.groups > 1:
            _, h, w, c = layer.input.shape
            convs[(h, c, layer.filters, layer.groups, layer.strides[0], layer.padding)] += 1
    dn = ("NHWC", "HWIO", "NHWC")
    total = collections.Counter()
    for (h, c, f, g, s, pad), count in sorted(convs.items()):
        x = jnp.asarray(rng.random((n, h, h, c)), dtype)
        k = jnp.asarray(rng.normal(0, 0.1, (3, 3, c // g, f)), dtype)
        layer = blocks.Conv2D(f, 3, strides=s, padding=pad, groups=g)
        layer.build((None, h, h, c))
        ours = blocks.grouped_chunks(g, c // g)

        def traced(chunks=None, sums=0):
            def run(x, k):
                with _grouped(chunks, sums):
                    return layer.convolution_op(x, k)
            return jax.jit(run)

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

        senet = f"{ours} chunks"
        forms = {"xla": jax.jit(xla), "im2col": jax.jit(im2col)}
        for chunks in sorted({max(1, ours // 2), ours, min(g, ours * 2)}):
            forms[f"{chunks} chunks"] = traced(chunks=chunks)
        if c // g <= 8:
            forms["sums"] = traced(sums=c // g)
        want = np.asarray(forms["xla"](x, k), np.float32)
        row = {}
        for name, fn in forms.items():
            got = np.asarray(fn(x, k), np.float32)
            assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max(), name
            row[name + (" (senet)" if name == senet else "")] = median_ms(fn, x, k)
        total["xla"] += count * row["xla"]
        total["senet"] += count * row[senet + " (senet)"]
        print(f"  {h}x{h}x{c} -> {f}, {g} groups ({c // g} channels each), stride {s}, "
              f"x{count}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in row.items()),
              flush=True)
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="senet154")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--forward-only", action="store_true", help="skip the layers alone")
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from senet import bench, engines
    from senet.models import create_model

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    rng = np.random.default_rng(0)
    n, dtype = args.batch_size, args.precision
    for name in args.model.split(","):
        keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
        try:
            models = [create_model(name, weights=None) for _ in range(2)]
        finally:
            keras.config.set_dtype_policy("float32")
        models[1].set_weights(models[0].get_weights())
        total = {}
        if not args.forward_only:
            print(f"{name}, {dtype}, batch {n}: each distinct grouped conv, ms per call")
            total = _layers(models[0], n, dtype, rng)
        x = bench._noise(n, 224)
        forwards = {}
        for label, model, sums in (("senet", models[0], 0), ("sums", models[1], 4)):
            forward = engines._jax_forward(model) or engines._jax_programs(model, [])
            with _grouped(sums=sums):
                out = np.asarray(forward(x))  # compiled here
            forwards[label] = (forward, out)
        diff = np.abs(forwards["senet"][1] - forwards["sums"][1]).max()
        r = bench.alternate({k: lambda f=f: np.asarray(f(x)) for k, (f, _) in forwards.items()},
                            n, args.rounds)
        ms = {k: 1e3 * n / np.median(v) for k, v in r.items()}
        share = (f"; its grouped convs alone, as senet runs them: {total['senet']:.0f} ms, "
                 f"as XLA's grouped convolution: {total['xla']:.0f} ms" if total else "")
        print(f"{name}, {dtype}, batch {n}, the whole forward as the Keras engine runs it: "
              f"{ms['senet']:.0f} ms, with the sums at up to 4 channels a group {ms['sums']:.0f} "
              f"ms, {bench.ratio(r['sums'], r['senet'])} as fast (outputs differ by "
              f"{diff:.1e}){share}", flush=True)


if __name__ == "__main__":
    main()
