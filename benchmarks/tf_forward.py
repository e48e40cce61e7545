"""Why the Keras engine on TensorFlow folds each BatchNorm into its conv before it freezes the
graph (`senet.engines._tf_forward`): the frozen forward traced with the folds against the
same traced without them (TensorFlow's graph optimizer left to fold what it can), both called
as the engine calls them, in one process, timed alternately.

    python benchmarks/tf_forward.py [--model se_resnet50,se_resnext50_32x4d,senet154]
        [--batch-size 1,16] [--precision float32,bfloat16] [--rounds 6]

Random weights and inputs (224 px), with each BatchNorm given statistics, scale and offset
like a trained net's (`--untrained` not): a freshly built net's BatchNorms are the identity,
and with a zero offset TensorFlow's optimizer drops the folded bias add, and with it its
conv-bias-ReLU fusion (SE-ResNet-50, bfloat16, 16 images, ad hoc: 1.26x instead of 1.73x).
Prints images/s of each path (medians) and the median of the per-round ratios, with their
range.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_resnet50,se_resnext50_32x4d,senet154")
    p.add_argument("--batch-size", default="1,16")
    p.add_argument("--precision", default="float32,bfloat16")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--untrained", action="store_true")
    args = p.parse_args()
    import keras

    from senet import bench, engines
    from senet.models import create_model

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("run with KERAS_BACKEND=tensorflow")
    print("| model | precision | batch | unfolded, images/s | folded, images/s | ratio (range) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name in args.model.split(","):
        for precision in args.precision.split(","):
            keras.config.set_dtype_policy({"float32": "float32",
                                           "bfloat16": "mixed_bfloat16"}[precision])
            try:
                model = create_model(name, weights=None)
            finally:
                keras.config.set_dtype_policy("float32")
            if not args.untrained:
                trained_like(model, np.random.default_rng(0))
            forwards = {"unfolded": engines._tf_forward(model, fold=False),
                        "folded": engines._tf_forward(model)}
            for batch in (int(b) for b in args.batch_size.split(",")):
                x = bench._noise(batch, 224)
                paths = {k: (lambda f=f: np.asarray(f(x))) for k, f in forwards.items()}
                for f in paths.values():
                    f()
                r = bench.alternate(paths, batch, args.rounds, iters=1 if batch > 1 else 3)
                print(f"| {name} | {precision} | {batch} | "
                      f"{np.median(r['unfolded']):.1f} | {np.median(r['folded']):.1f} | "
                      f"{bench.ratio(r['folded'], r['unfolded'])} |", flush=True)


def trained_like(model, rng):
    """Each BatchNorm's statistics, scale and offset drawn away from a fresh net's 0 and 1."""
    from senet.blocks import BatchNormalization

    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            n = layer.gamma.shape[0]
            for v, low, high in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.2, 0.2),
                                 (layer.moving_mean, -0.2, 0.2),
                                 (layer.moving_variance, 0.5, 1.5)):
                v.assign(rng.uniform(low, high, n).astype("float32"))


if __name__ == "__main__":
    main()
