"""senet benchmark --model NAME [--backend B] [--batch-size N] [--precision P] [--json]"""

import json
import os
import sys

from senet.bench import BACKENDS, PRECISIONS
from senet.variants import VARIANTS


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="NAME", help=", ".join(VARIANTS))
    p.add_argument("--backend", choices=BACKENDS,
                   help="Keras backend (default: KERAS_BACKEND, else tensorflow)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="default: 8")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="image size (default: 224)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                   help="float32, or a Keras mixed policy: 16-bit compute, float32 weights "
                        "(timm: CPU autocast)")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed batches first (default: 3)")
    p.add_argument("--iters", type=int, default=10, metavar="N",
                   help="timed batches (default: 10)")
    p.add_argument("--no-peer", dest="peer", action="store_false",
                   help="skip timm's model (measured by default when timm is installed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # The backend is chosen before Keras is imported: `run` imports it.
    p.set_defaults(needs_keras=False)


def run(args):
    from senet import bench
    from senet.cli import UserError, import_keras_quietly

    if args.backend and "keras" not in sys.modules:  # else bench.run uses a child process
        os.environ["KERAS_BACKEND"] = args.backend
    import_keras_quietly()
    try:
        r = bench.run(args.model, batch_size=args.batch_size, size=args.size, warmup=args.warmup,
                      iters=args.iters, precision=args.precision, backend=args.backend,
                      peer=args.peer)
    except bench.ChildError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['model']}, batch {r['batch_size']} at {r['size']} px, {r['precision']}, "
          f"{r['iters']} timed batches after {r['warmup']} warm-up: "
          f"{r['gflops_per_image']:.2f} GFLOPs per image "
          f"(2 x {r['macs_per_image'] / 1e9:.2f} G multiply-adds of the convs and dense layers)")
    rows = [(f"senet (Keras, {r['keras']['backend']})", r["keras"])]
    if r["peer"]:
        rows.append((f"{r['peer']['model']} (timm)", r["peer"]))
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'':<{width}}{'images/s':>10}{'median ms':>11}{'p95 ms':>10}{'GFLOP/s':>10}")
    for label, e in rows:
        if "error" in e:
            print(f"{label:<{width}}failed: {e['error']}")
            continue
        print(f"{label:<{width}}{e['images_per_s']:>10.1f}{e['latency_ms_median']:>11.1f}"
              f"{e['latency_ms_p95']:>10.1f}{e['gflops_per_s']:>10.1f}")
    if r["peer"] is None and args.peer:
        why = ("timm has no model of it" if r["model"] not in bench.TIMM_PEERS
               else "timm is not installed")
        print(f"No peer measured: {why}.")
    if r["peer"] and "memory_format" in r["peer"]:
        by_format = ", ".join(f"{f} {ips:.1f}" for f, ips in
                              r["peer"]["images_per_s_by_memory_format"].items())
        print(f"timm: eager PyTorch, inference_mode, {r['peer']['memory_format']} (the faster: "
              f"{by_format} images/s)")
