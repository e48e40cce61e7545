"""Inference images/s of one SENet model on one Keras backend.

    python benchmarks/benchmark.py --model se_resnext50_32x4d --backend jax --batch-size 16

The backend must be chosen before Keras is imported, hence the environment variable here.
"""

import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="se_resnet50")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"],
                   default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from senet.bench import run

    r = run(args.model, args.batch_size, args.size, args.warmup, args.iters)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['model']} on {r['backend']}, batch {r['batch_size']} at {r['size']} px: "
              f"{r['images_per_s']:.1f} images/s, latency median {r['latency_ms_median']:.1f} ms, "
              f"p95 {r['latency_ms_p95']:.1f} ms ({r['iters']} runs after {args.warmup} warm-up)")


if __name__ == "__main__":
    main()
