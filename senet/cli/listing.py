"""senet list: every model with its size, compute and the accuracy of its published weights."""

import json


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(needs_keras=False)


def rows():
    from senet.variants import VARIANTS

    for v in VARIANTS.values():
        yield {
            "model": v.name, "constructor": v.constructor, "title": v.title,
            "params": v.params, "top1_err_official": v.top1_err, "top5_err_official": v.top5_err,
            "imagenet_weights": v.weights_url, "weights_top1_timm": v.weights_top1,
        }


def run(args):
    if args.json:
        for r in rows():
            print(json.dumps(r))
        return
    print(f"{'model':<22}{'constructor':<15}{'params':>13}  {'top-1 err (paper)':>18}  "
          f"{'weights top-1 (timm)':>20}  imagenet")
    for r in rows():
        params = f"{r['params']:,}" if r["params"] else "-"
        err = f"{r['top1_err_official']:.2f}%" if r["top1_err_official"] else "-"
        acc = f"{r['weights_top1_timm']:.2f}%" if r["weights_top1_timm"] else "-"
        print(f"{r['model']:<22}{r['constructor']:<15}{params:>13}  {err:>18}  {acc:>20}  "
              f"{'yes' if r['imagenet_weights'] else 'convert by hand'}")
