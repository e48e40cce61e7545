"""Why the Keras engine on TensorFlow folds each BatchNorm into its conv before it freezes the
graph (`senet.engines._tf_forward`): the frozen forward traced with the folds against the
same traced without them (TensorFlow's graph optimizer left to fold what it can), both called
as the engine calls them, in one process, timed alternately.

    python benchmarks/tf_forward.py [--model se_resnet50,se_resnext50_32x4d,senet154]
        [--batch-size 1,16] [--precision float32,bfloat16] [--rounds 6]

Random weights and inputs (224 px), the BatchNorms drawn like a trained net's as `senet
benchmark` draws them (`senet.bench.trained_like`; `--untrained`: a fresh net's identity
BatchNorms, whose zero biases TensorFlow's optimizer drops, and with them a fusion).
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
            keras.config.set_dtype_policy(bench.KERAS_POLICIES[precision])
            try:
                model = create_model(name, weights=None)
            finally:
                keras.config.set_dtype_policy("float32")
            if not args.untrained:
                bench.trained_like(model)
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


if __name__ == "__main__":
    main()
