"""senet's JAX forms of single layers against Keras' own ops, each layer alone: the stem's
max pool as a maximum of slices (`senet.blocks.MaxPooling2D`), and bfloat16 dense convs as
products over windows copied a few images at a time (`senet.blocks.Conv2D._jax_product`),
also against the product over the whole batch's windows at once.

    KERAS_BACKEND=jax python benchmarks/jax_layers.py [--batch-size 16] [--rounds 5]

Each form jitted alone and called on the same random input, the forms of a layer timed
alternately in one process (`senet.bench.alternate`); the median ms of each form and the
median of the per-round ratios, with their range. The layers are those of SE-ResNet-50
(the 7x7 stem, the 3x3 convs of its four stages), SENet-154's widest stem conv, and the
stem's 3x3/2 max pool on Caffe's padded input (112 + 1 = 113 pixels). The whole forward's
gain is smaller, since a layer alone has the cache to itself: see
`benchmarks/jax_products.py` and `benchmarks/jax_profile.py`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

# (name, input size, channels in, channels out, kernel, stride, padding)
CONVS = [("SE-ResNet-50 stem", 230, 3, 64, 7, 2, "valid"),
         ("SE-ResNet-50 conv2 3x3", 56, 64, 64, 3, 1, "same"),
         ("SE-ResNet-50 conv3 3x3", 28, 128, 128, 3, 1, "same"),
         ("SE-ResNet-50 conv4 3x3", 14, 256, 256, 3, 1, "same"),
         ("SE-ResNet-50 conv5 3x3", 7, 512, 512, 3, 1, "same"),
         ("SENet-154 conv1_3", 112, 64, 128, 3, 1, "same")]


def _forms(layer, kind):
    """name -> jitted function of (x, kernel) or (x,): Keras' op, then senet's forms."""
    import jax
    import keras

    if kind == "pool":
        return {"Keras' reduce-window": jax.jit(lambda x: keras.layers.MaxPooling2D.call(layer, x)),
                "senet (maximum of slices)": jax.jit(layer.call)}
    return {"Keras' convolution": jax.jit(
                lambda x, k: keras.layers.Conv2D.convolution_op(layer, x, k)),
            "whole batch's windows": jax.jit(layer._jax_windows_product),
            "senet (a few images' windows)": jax.jit(layer.convolution_op)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp
    import keras

    from senet import bench, blocks

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    rng = np.random.default_rng(0)
    n = args.batch_size
    cases = [(f"stem max pool, {dtype}", (n, 113, 113, 64), dtype,
              blocks.MaxPooling2D(3, strides=2, dtype=dtype), None)
             for dtype in ("bfloat16", "float32")]
    for name, size, cin, cout, k, s, pad in CONVS:
        layer = blocks.Conv2D(cout, k, strides=s, padding=pad, use_bias=False,
                              dtype="mixed_bfloat16")
        layer.build((None, size, size, cin))
        cases.append((f"{name}, bfloat16", (n, size, size, cin), "bfloat16", layer,
                      rng.normal(0, 0.1, (k, k, cin, cout))))
    print(f"Keras on JAX, each layer alone, batch {n}, ms (median of {args.rounds} alternated "
          "rounds)")
    print("| layer | input | Keras' op | whole batch's windows | senet "
          "| speed, senet / Keras' op |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, shape, dtype, layer, kernel in cases:
        args_ = [jnp.asarray(rng.uniform(-1, 1, shape), dtype)]
        if kernel is not None:
            args_.append(jnp.asarray(kernel, dtype))
        forms = _forms(layer, "pool" if kernel is None else "conv")
        outs = {f: np.asarray(fn(*args_), np.float32) for f, fn in forms.items()}
        want = next(iter(outs.values()))
        worst = max(np.abs(o - want).max() for o in outs.values()) / np.abs(want).max()
        if worst > (0 if kernel is None else 2e-2):  # bfloat16 rounding of a float32 sum
            raise SystemExit(f"{name}: the forms disagree ({worst:.1e} of the largest output)")
        r = bench.alternate({f: lambda fn=fn: jax.block_until_ready(fn(*args_))
                             for f, fn in forms.items()}, n, args.rounds, warmup=1)
        ms = {f: 1e3 * n / np.median(v) for f, v in r.items()}
        keras_op, *_, senet = forms
        whole = ms.get("whole batch's windows")
        print(f"| {name} | {shape} | {ms[keras_op]:.1f} | {'' if whole is None else f'{whole:.1f}'}"
              f" | {ms[senet]:.1f} | {bench.ratio(r[senet], r[keras_op])} |", flush=True)


if __name__ == "__main__":
    main()
