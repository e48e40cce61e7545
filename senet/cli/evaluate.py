"""senet evaluate DIR: top-1 / top-5 accuracy on a validation set.

DIR holds either class sub-folders (DIR/n01440764/*.JPEG, the layout of Keras, timm and
torchvision; for a model trained by `senet train`, folders named by its classes), or the
images themselves with a label file (`name label` per line, label a class id in
--label-order order, a wnid or a class name). Labels become class ids first, then indices in
the model's own output order, so any file works with any weights.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from senet._progress import Progress
from senet.cli.predict import add_model_arguments, check_model_arguments, \
    load_model, predict_batches


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="wnid sub-folders, or a flat folder with --labels")
    p.add_argument("--labels", metavar="FILE",
                   help="'name label' per line for a flat DIR (e.g. the authors' "
                        "ILSVRC2017_val.txt); label a class id or a wnid")
    p.add_argument("--label-order", choices=["sorted", "devkit"],
                   help="order of the class ids in --labels: 'devkit' (ILSVRC2012 devkit "
                        "ids minus 1, as in the SENet authors' file; the default) or "
                        "'sorted' (sorted wnids, as in Caffe's val.txt)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate only the first N images (in sorted order)")
    p.add_argument("--json", dest="json_out", metavar="OUT.json",
                   help="also write the results to this JSON file")
    add_model_arguments(p)


def _class_folders(root, wnids):
    """(path, class id) of the images in root's class sub-folders, sorted."""
    from senet.cli import UserError
    from senet.images import EXTENSIONS

    samples, loose = [], 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and entry.name in wnids:
            for name in sorted(os.listdir(entry.path)):
                if name.lower().endswith(EXTENSIONS) and not name.startswith("."):
                    samples.append((os.path.join(entry.path, name), entry.name))
        elif entry.is_file() and entry.name.lower().endswith(EXTENSIONS):
            loose += 1
    if not samples and loose:
        raise UserError(f"{root}: {loose} images but no class sub-folders (like "
                        f"{os.path.join(root, sorted(wnids)[0])}); for a flat folder pass "
                        "--labels FILE ('name label' per line).")
    return samples


def _label_file(path, root, table):
    """(path, class id) of every line of the label file `path`, sorted by file name.

    `table`: (id, name) of the classes in the order the file's numeric labels use.
    """
    from senet.cli import UserError
    from senet.images import read_label_file

    wnids = {w for w, _ in table}
    samples = []
    for lineno, name, label in read_label_file(path):
        if label not in wnids:
            if not (label.isascii() and label.isdigit()) or not 0 <= int(label) < len(table):
                raise UserError(f"{path}, line {lineno}: label {label!r} is neither a "
                                f"class id 0-{len(table) - 1} nor a class of the model "
                                f"(such as {table[0][0]!r}).")
            label = table[int(label)][0]
        samples.append((os.path.join(root, name), label))
    samples.sort()
    if samples and not any(os.path.exists(p) for p, _ in samples):
        raise UserError(f"none of the {len(samples)} files listed in {path} is in {root}.")
    return samples


def find_samples(args, table):
    """The (path, class id) pairs to evaluate, in sorted order, limited to --limit.

    `table`: (id, name) of the model's outputs, in order.
    """
    from senet.cli import UserError
    from senet.imagenet import class_table

    if not os.path.isdir(args.dir):
        what = "not a directory" if os.path.exists(args.dir) else "no such directory"
        raise UserError(f"{args.dir}: {what}.")
    imagenet_1k = len(table) == 1000 and table[0][0].startswith("n")
    if args.labels:
        if args.label_order and not imagenet_1k:
            raise UserError("--label-order applies to ImageNet-1k models; the file's ids are "
                            "taken in the model's own class order.")
        order_table = class_table(args.label_order or "devkit") if imagenet_1k else table
        samples = _label_file(args.labels, args.dir, order_table)
    else:
        if args.label_order:
            raise UserError("--label-order applies to a --labels file; class sub-folders "
                            "name their classes themselves.")
        samples = _class_folders(args.dir, {w for w, _ in table})
    if not samples:
        raise UserError(f"{args.dir}: no images found (expected class sub-folders like "
                        f"{os.path.join(args.dir, table[0][0], '*.JPEG')}, or image files "
                        "listed in a --labels file).")
    return samples[:args.limit] if args.limit else samples


def _pct(k, n):
    return 100.0 * k / n if n else None


def run(args):
    from senet._io import atomic_write
    from senet.cli import UserError
    from senet.imagenet import labels

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit}).")
    if args.json_out and os.path.isdir(args.json_out):
        raise UserError(f"--json {args.json_out}: is a directory; name the output file.")
    check_model_arguments(args)
    samples = find_samples(args, labels(args.meta, args.meta.get("classes")))
    predictor = load_model(args, len(samples))
    table = predictor.labels
    index = {w: i for i, (w, _) in enumerate(table)}
    label_of = {path: index[wnid] for path, wnid in samples}

    progress = Progress(len(samples))
    n = top1 = top5 = failed = 0
    start = time.monotonic()
    for probs, ok, errors in predict_batches(predictor, [p for p, _ in samples], args):
        for _, message in errors:
            progress.note(f"senet evaluate: error: {message}")
        failed += len(errors)
        if ok:
            truth = np.array([label_of[p] for p in ok])
            best = np.argsort(-probs, axis=1, kind="stable")[:, :5]
            top1 += int((best[:, 0] == truth).sum())
            top5 += int((best == truth[:, None]).any(axis=1).sum())
            n += len(ok)
        progress.update(len(ok) + len(errors),
                        f"  top-1 {_pct(top1, n) or 0:.2f}%  top-5 {_pct(top5, n) or 0:.2f}%")
    seconds = time.monotonic() - start
    progress.close()

    result = {"model": args.model, "weights": args.weights, "dir": args.dir, "images": n,
              "top1": _pct(top1, n), "top5": _pct(top5, n), "errors": failed,
              "seconds": round(seconds, 3), "size": args.size, "crop_pct": args.crop_pct,
              "interpolation": args.interpolation, "engine": predictor.engine,
              "precision": args.precision}
    weights = "random weights" if args.weights is None else f"weights {args.weights}"
    print(f"{args.model} ({weights}) on {args.dir}, {args.size} px, "
          f"crop {args.crop_pct:g}, {args.interpolation}, {predictor.engine} "
          f"{args.precision}:")
    if n:
        print(f"  top-1 {result['top1']:6.2f}%  ({top1}/{n})")
        print(f"  top-5 {result['top5']:6.2f}%  ({top5}/{n})")
    else:
        print("  no image could be read")
    print(f"  {n} images, {failed} unreadable, {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} images/s)")
    if args.json_out:
        with atomic_write(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 1 if failed else 0
