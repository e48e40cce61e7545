"""senet list [--pretrained] [--json]: the architectures and their pretrained weights.

Everything comes from the variants table and the catalogue, so the command is instant (no
Keras import); tests check the table's parameter and multiply-add counts against the built
models and the catalogue against this listing.
"""

import json


def add_arguments(p):
    p.add_argument("--pretrained", action="store_true",
                   help="one line per pretrained weights tag (arch.tag) instead of per architecture")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(needs_keras=False)


def architectures():
    from senet import catalogue
    from senet.variants import VARIANTS

    for v in VARIANTS.values():
        entries = catalogue.tags(v)
        yield {
            "model": v.name, "constructor": v.constructor, "title": v.title,
            "params": v.params, "gmacs_224": v.macs / 1e9, "gflops_224": 2 * v.macs / 1e9,
            "top1_err_paper": v.top1_err, "top5_err_paper": v.top5_err, "timm": v.timm,
            "default_weights": entries[0].key if entries else None,
            "tags": [e.tag for e in entries],
            "best_top1": max((e.top1 for e in entries if e.top1 and e.classes == "imagenet-1k"),
                             default=None),
        }


def pretrained():
    from senet import catalogue

    first = set()
    for e in catalogue.CATALOGUE.values():
        yield {
            "name": e.key, "model": e.arch, "tag": e.tag, "default": e.arch not in first,
            "top1": e.top1, "top5": e.top5, "eval_size": e.eval_size,
            "eval_crop_pct": e.eval_crop_pct, "interpolation": e.interpolation,
            "train_size": e.size, "classes": e.classes, "input": e.input,
            "source": (f"hf-hub:{e.hub}/{e.file}" if e.hub else e.url) or "convert by hand",
            "fallback_url": e.url if e.hub else None, "sha256": e.sha256,
            "license": e.license, "origin": e.origin, "timm": e.timm,
        }
        first.add(e.arch)


def run(args):
    rows = list(pretrained() if args.pretrained else architectures())
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    if args.pretrained:
        print(f"{'weights (arch.tag)':<44}{'top-1':>7}{'top-5':>7}{'eval px':>8}{'crop':>6}  "
              f"{'resize':<9}{'classes':<13}source")
        for r in rows:
            top1 = f"{r['top1']:.2f}" if r["top1"] else "-"
            top5 = f"{r['top5']:.2f}" if r["top5"] else "-"
            mark = " *" if r["default"] else ""
            print(f"{r['name'] + mark:<44}{top1:>7}{top5:>7}{r['eval_size']:>8}"
                  f"{r['eval_crop_pct']:>6.3g}  {r['interpolation']:<9}{r['classes']:<13}"
                  f"{r['source']}")
        print("* the architecture's default (weights='imagenet'). Accuracy: timm's evaluation "
              "on ImageNet-1k val at the eval size (SE-BN-Inception: the paper's); `senet "
              "list --pretrained --json` for hashes, licences, origins.")
        return
    print(f"{'model':<24}{'constructor':<15}{'params':>13}{'GMACs':>7}  "
          f"{'top-1 err (paper)':>18}  {'best top-1':>10}  default weights")
    for r in rows:
        err = f"{r['top1_err_paper']:.2f}%" if r["top1_err_paper"] else "-"
        acc = f"{r['best_top1']:.2f}%" if r["best_top1"] else "-"
        print(f"{r['model']:<24}{r['constructor'] or '-':<15}{r['params']:>13,}"
              f"{r['gmacs_224']:>7.2f}  {err:>18}  {acc:>10}  {r['default_weights'] or '-'}")
    print("GMACs: multiply-adds of the convs and dense layers per 224x224 image (what papers "
          "call GFLOPs). Best top-1: the best ImageNet-1k weights of the architecture (timm's "
          "evaluation). `senet list --pretrained` lists every tag.")
