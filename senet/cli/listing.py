"""senet list: every model with its size, compute and the accuracy of its published weights."""

import json


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.add_argument("--flops", action="store_true",
                   help="add multiply-adds and GFLOPs (= 2 x multiply-adds) per 224 px image, "
                        "counted on each built model (about a second per model)")
    p.set_defaults(needs_keras=False)  # imported only for --flops


def rows(flops=False):
    from senet.variants import VARIANTS

    for v in VARIANTS.values():
        row = {
            "model": v.name, "constructor": v.constructor, "title": v.title,
            "params": v.params, "top1_err_official": v.top1_err, "top5_err_official": v.top5_err,
            "imagenet_weights": v.weights_url, "weights_top1_timm": v.weights_top1,
        }
        if flops:
            row.update(_compute(v.name))
        yield row


def _compute(name):
    """Multiply-adds and GFLOPs of `name` at 224 px, counted by `senet.bench` on the built model."""
    import keras

    from senet import bench
    from senet.models import DEFAULT_SIZE, create_model

    model = create_model(name, input_shape=bench.image_shape(DEFAULT_SIZE))
    macs = bench.macs(model)
    del model
    keras.backend.clear_session(free_memory=True)
    return {"gmacs_224": macs / 1e9, "gflops_224": 2 * macs / 1e9}


def run(args):
    if args.flops:
        from senet.cli import import_keras_quietly

        import_keras_quietly()
    if args.json:
        for r in rows(args.flops):
            print(json.dumps(r), flush=True)
        return
    compute = f"{'GMACs':>7}{'GFLOPs':>8}" if args.flops else ""
    print(f"{'model':<22}{'constructor':<15}{'params':>13}{compute}  {'top-1 err (paper)':>18}  "
          f"{'weights top-1 (timm)':>20}  imagenet")
    for r in rows(args.flops):
        params = f"{r['params']:,}" if r["params"] else "-"
        compute = f"{r['gmacs_224']:>7.2f}{r['gflops_224']:>8.2f}" if args.flops else ""
        err = f"{r['top1_err_official']:.2f}%" if r["top1_err_official"] else "-"
        acc = f"{r['weights_top1_timm']:.2f}%" if r["weights_top1_timm"] else "-"
        print(f"{r['model']:<22}{r['constructor']:<15}{params:>13}{compute}  {err:>18}  {acc:>20}  "
              f"{'yes' if r['imagenet_weights'] else 'convert by hand'}", flush=True)
    if args.flops:
        print("GMACs: multiply-adds of the convs and dense layers per 224x224 image (what papers "
              "call GFLOPs); GFLOPs = 2 x GMACs.")
