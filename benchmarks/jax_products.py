"""Why senet's Conv2D runs every dense conv of a mixed-bfloat16 model on JAX as one matrix
product into float32 (`senet.blocks.Conv2D._jax_product`), its windows copied out a few
images at a time: the whole forward with that path against the same model whose convs
larger than 1x1 are Keras' own (XLA's convolution), and against the product over the whole
batch's windows at once, in one process, timed alternately.

    KERAS_BACKEND=jax python benchmarks/jax_products.py
        [--model se_resnet50,se_resnext50_32x4d,senet154] [--batch-size 1,16] [--precision bfloat16|float32] [--rounds 6] [--train]

Random weights and inputs, as `senet benchmark` times them (224 px), compiled as Keras'
`predict_on_batch` compiles them. Prints the median of each path's times, the median of
the per-round ratios with their range, and the largest difference between the product's
outputs (softmax) and the others'. `--precision float32` forces the product on float32 models too, to show
why senet does not take it there. `--train` times a training step's gradient instead
(cross-entropy, BatchNorm in training mode), whose backward is the convolution's on every
path.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np


@contextlib.contextmanager
def _convs(kind):
    """While a model is first called (compiled): 'product' computes every dense conv as the
    product (as senet does: windows copied out a few images at a time), 'whole' as the
    product over the whole batch's windows at once, 'convolution' leaves the convs larger
    than 1x1 to Keras."""
    import keras

    from senet import blocks

    saved, saved_bytes = blocks.Conv2D.convolution_op, blocks.WINDOWS_BYTES

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 and self.kernel_size != (1, 1):
            if kind == "convolution":
                return keras.layers.Conv2D.convolution_op(self, inputs, kernel)
            return self._jax_product(inputs, kernel)
        return saved(self, inputs, kernel)

    blocks.Conv2D.convolution_op = convolution_op
    if kind == "whole":
        blocks.WINDOWS_BYTES = 1 << 62
    try:
        yield
    finally:
        blocks.Conv2D.convolution_op, blocks.WINDOWS_BYTES = saved, saved_bytes


KINDS = ("convolution", "whole", "product")


def _gradient(model):
    """The gradient of a cross-entropy step as Keras' JAX trainer computes it (stateless,
    BatchNorm in training mode), jitted; returns the loss (the gradient is computed)."""
    import jax
    import jax.numpy as jnp

    def loss(trainable, x):
        probs, _ = model.stateless_call(trainable, non_trainable, x / 100, training=True)
        return -jnp.mean(jnp.log(probs[:, 0].astype("float32") + 1e-7))  # all of class 0

    non_trainable = [v.value for v in model.non_trainable_variables]
    step = jax.jit(jax.value_and_grad(loss))
    return lambda x: jax.block_until_ready(step([v.value for v in model.trainable_variables],
                                                x))[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_resnet50,se_resnext50_32x4d,senet154")
    p.add_argument("--batch-size", default="1,16")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--train", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from senet import bench
    from senet.models import create_model

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    print(f"Keras on JAX, {args.precision}, {'gradient' if args.train else 'forward'}: convs "
          "larger than 1x1 as XLA's convolution, as one product over the whole batch's "
          "windows, and as senet runs them (the product, a few images' windows at a time)")
    print("| model | batch | convolution, ms | whole, ms | product, ms | product / convolution "
          "| product / whole | max difference |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    keras.config.set_dtype_policy("mixed_bfloat16" if args.precision == "bfloat16"
                                  else "float32")
    try:
        models = {name: [create_model(name, weights=None) for _ in KINDS]
                  for name in args.model.split(",")}
    finally:
        keras.config.set_dtype_policy("float32")
    for name, copies in models.items():
        for model in copies[1:]:
            model.set_weights(copies[0].get_weights())
        for batch in (int(b) for b in args.batch_size.split(",")):
            x = bench._noise(batch, 224)
            run = _gradient if args.train else lambda model: model.predict_on_batch
            paths = {kind: run(model) for kind, model in zip(KINDS, copies)}
            out = {}
            for kind, f in paths.items():
                with _convs(kind):
                    out[kind] = np.asarray(f(x))  # compiled here, with this kind of conv
            diff = max(np.abs(out["product"] - out[k]).max() for k in KINDS)
            r = bench.alternate({k: lambda f=f: np.asarray(f(x)) for k, f in paths.items()},
                                batch, args.rounds)
            ms = " | ".join(f"{1e3 * batch / np.median(r[k]):.0f}" for k in KINDS)
            print(f"| {name} | {batch} | {ms} | {bench.ratio(r['product'], r['convolution'])} | "
                  f"{bench.ratio(r['product'], r['whole'])} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
