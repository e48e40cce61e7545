"""senet list: every model with its size, compute and the accuracy of its published weights.

Everything comes from the variants table, so the command is instant (no Keras import);
tests check the table's parameter and multiply-add counts against the built models.
"""

import json


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(needs_keras=False)


def rows():
    from senet.variants import VARIANTS

    for v in VARIANTS.values():
        yield {
            "model": v.name, "constructor": v.constructor, "title": v.title,
            "params": v.params, "gmacs_224": v.macs / 1e9, "gflops_224": 2 * v.macs / 1e9,
            "top1_err_official": v.top1_err, "top5_err_official": v.top5_err,
            "imagenet_weights": v.weights_url, "weights_top1_timm": v.weights_top1,
        }


def run(args):
    if args.json:
        for r in rows():
            print(json.dumps(r))
        return
    print(f"{'model':<22}{'constructor':<15}{'params':>13}{'GMACs':>7}{'GFLOPs':>8}  "
          f"{'top-1 err (paper)':>18}  {'weights top-1 (timm)':>20}  imagenet")
    for r in rows():
        err = f"{r['top1_err_official']:.2f}%" if r["top1_err_official"] else "-"
        acc = f"{r['weights_top1_timm']:.2f}%" if r["weights_top1_timm"] else "-"
        print(f"{r['model']:<22}{r['constructor']:<15}{r['params']:>13,}{r['gmacs_224']:>7.2f}"
              f"{r['gflops_224']:>8.2f}  {err:>18}  {acc:>20}  "
              f"{'yes' if r['imagenet_weights'] else 'convert by hand'}")
    print("GMACs: multiply-adds of the convs and dense layers per 224x224 image (what papers "
          "call GFLOPs); GFLOPs = 2 x GMACs.")
