"""Why the Keras engine on JAX compiles a deep net as several programs
(`senet.engines._jax_forward`): the net's forward compiled whole against the engine's
programs, both called as the engine calls them, in one process, timed alternately.

    python benchmarks/jax_programs.py [--model senet154,se_resnet152] [--batch-size 1,16]
        [--precision float32|bfloat16] [--rounds 6] [--units 8] [--keras]

Random weights and inputs, as `senet benchmark` times them (224 px). Prints the
median of each path's times and the median of the per-round ratios, with their range;
`--units N` cuts every N units of a stage instead of the engine's default (a net whose
stages are all shorter is then cut nowhere, and is reported so). `--keras`: Keras'
`predict_on_batch` against the engine's forward as it runs it (in mixed bfloat16 one
program fed its kernels cast once, `senet.engines._jax_weights`).
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="senet154,se_resnet152")
    p.add_argument("--batch-size", default="1,16")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--units", type=int, default=None)
    p.add_argument("--keras", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from senet import bench, engines
    from senet.models import create_model

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    units = args.units or engines.UNITS_PER_PROGRAM
    print(f"Keras on JAX, {args.precision}, at most {units} units of a stage per program"
          + (" (the engine cuts float32 only)" if args.precision == "bfloat16" else ""))
    print("| model | batch | programs | " + ("Keras' predict_on_batch, ms | engine, ms"
                                             if args.keras else "whole, ms | programs, ms")
          + " | ratio (range) |")
    print("| --- | ---: | --- | ---: | ---: | --- |")
    for name in args.model.split(","):
        keras.config.set_dtype_policy("mixed_bfloat16" if args.precision == "bfloat16"
                                      else "float32")
        try:
            model = create_model(name, weights=None)
        finally:
            keras.config.set_dtype_policy("float32")
        if args.keras:
            forward, whole = engines._jax_forward(model, units), None
        else:
            cuts = engines._jax_cuts(model, units)  # in bfloat16 too, to measure it
            forward = engines._jax_programs(model, cuts) if cuts else None
            whole = engines._jax_programs(model, [])
        if forward is None:
            print(f"| {name} | | | no stage longer than {units} units: one program, Keras' "
                  "own | | |")
            continue
        for batch in (int(b) for b in args.batch_size.split(",")):
            x = bench._noise(batch, 224)
            paths = {"whole": lambda: np.asarray(whole(x) if whole else
                                                 model.predict_on_batch(x)),
                     "programs": lambda: np.asarray(forward(x))}
            for f in paths.values():
                f()
            r = bench.alternate(paths, batch, args.rounds)
            print(f"| {name} | {batch} | {len(forward.parts)} | "
                  f"{1e3 * batch / np.median(r['whole']):.0f} | "
                  f"{1e3 * batch / np.median(r['programs']):.0f} | "
                  f"{bench.ratio(r['programs'], r['whole'])} |", flush=True)


if __name__ == "__main__":
    main()
