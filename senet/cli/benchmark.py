"""senet benchmark --model NAME: images/s of senet's default path, its engines and the peers."""

import json


def _csv(kind, choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if kind is int:
            try:
                return [int(t) for t in items]
            except ValueError:
                raise ValueError(f"expected comma-separated integers, got {text!r}") from None
        if choices and "all" in items:
            return list(choices)
        return items

    parse.__name__ = "comma-separated list"
    return parse


def add_arguments(p):
    from senet.bench import BACKENDS, PEERS, PRECISIONS

    p.add_argument("--model", required=True, metavar="NAME", help="architecture (`senet list`)")
    p.add_argument("--batch-size", type=_csv(int), default=[16], metavar="N[,N...]",
                   help="batch sizes (default: 16), e.g. 1,16")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="image size (default: 224)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="the default path's precision (default: float32)")
    p.add_argument("--engine", type=_csv(str, ("keras", "openvino", "onnxruntime")),
                   default=[], metavar="E[,E...]|all",
                   help="also time these engines (keras, openvino, onnxruntime, all)")
    p.add_argument("--precisions", type=_csv(str, PRECISIONS), metavar="P[,P...]|all",
                   help="precisions for --engine and the peers (default: --precision)")
    p.add_argument("--backend", type=_csv(str, BACKENDS), default=[], metavar="B[,B...]|all",
                   help="also time the keras engine on these Keras backends")
    p.add_argument("--peers", type=_csv(str, PEERS), default=list(PEERS), metavar="P[,P...]",
                   help="timm, onnxruntime, openvino (on timm's ONNX export); 'none' for none "
                        "(default: all three)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed batches (default: 3)")
    p.add_argument("--iters", type=int, default=10, metavar="N", help="timed batches (default: 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="OUT.png", help="also plot images/s against batch size")
    p.set_defaults(needs_keras=False)  # imported by `run`, after the options are checked


def run(args):
    from senet import bench
    from senet.cli import import_keras_quietly

    import_keras_quietly()
    peers = [] if args.peers == ["none"] else args.peers
    r = bench.run(args.model, batch_sizes=args.batch_size, size=args.size,
                  precision=args.precision, engines=args.engine, precisions=args.precisions,
                  backends=args.backend, peers=peers, warmup=args.warmup, iters=args.iters)
    if args.plot:
        bench.plot(r, args.plot)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['model']} at {r['size']} px, {r['iters']} timed batches after {r['warmup']} "
          f"warm-up: {r['gflops_per_image']:.2f} GFLOPs per image ({bench.FLOPS_CONVENTION})")
    width = max(len(x["label"]) for x in r["results"]) + 2
    print(f"{'':<{width}}{'batch':>6}{'images/s':>10}{'median ms':>11}{'p95 ms':>9}"
          f"{'GFLOP/s':>9}{'vs OV-on-timm':>15}")
    for x in r["results"]:
        if "error" in x:
            print(f"{x['label']:<{width}}{x['batch_size']:>6}  failed: {x['error']}")
            continue
        ratio = f"{x['vs_openvino_on_timm']:.2f}x" if "vs_openvino_on_timm" in x else "-"
        print(f"{x['label']:<{width}}{x['batch_size']:>6}{x['images_per_s']:>10.1f}"
              f"{x['latency_ms_median']:>11.1f}{x['latency_ms_p95']:>9.1f}"
              f"{x['gflops_per_s']:>9.1f}{ratio:>15}")
    for line in r["skipped"]:
        print(f"not timed: {line}")
    d = r["senet"]
    print(f"Default path (senet predict): {d['engine']} {d['precision']}"
          + ("" if r["timm_model"] else "; timm has no model of it, so no peers") + ".")
