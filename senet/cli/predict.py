"""senet predict IMAGE...: the top-k ImageNet classes of each image.

Also the model side shared with `senet evaluate`: the options, loading the model, running
it over decoded batches, and the progress bar.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from senet._progress import Progress
from senet.images import DEFAULT_CROP_PCT, INTERPOLATIONS
from senet.variants import DEFAULT_SIZE, MIN_SIZE

DEFAULT_MODEL = "se_resnext50_32x4d"


def add_model_arguments(p):
    """The options of every command that runs a classifier over image files."""
    p.add_argument("--model", metavar="NAME[.TAG]",
                   help=f"architecture, optionally with a weights tag (default: the one recorded "
                        f"in the --weights file, else {DEFAULT_MODEL}); `senet list` shows them")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|TAG|FILE|none",
                   help="'imagenet' (the architecture's default weights, downloaded once and "
                        "cached), a tag such as seresnet50.a1_in1k (`senet list --pretrained`), "
                        "a weights file written by `senet convert` or `senet train`, or 'none' "
                        "(random weights, to measure speed)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="images per model call (default: 16)")
    p.add_argument("--size", type=int, metavar="PX",
                   help="crop size fed to the model (default: the weights' evaluation size, "
                        f"else {DEFAULT_SIZE})")
    p.add_argument("--crop-pct", type=float, metavar="F",
                   help="the crop is this fraction of the resized shorter side: resize to "
                        "floor(size / F), then centre-crop (default: the weights', else "
                        f"{DEFAULT_CROP_PCT}, i.e. 256 then 224)")
    p.add_argument("--interpolation", choices=list(INTERPOLATIONS),
                   help="resize filter (default: the weights', else bilinear)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="image decoding threads (default: CPU count, at most 8)")
    p.add_argument("--engine", default="auto", choices=["auto", "keras", "openvino", "onnxruntime"],
                   help="what runs the model (default auto: OpenVINO if installed, else ONNX "
                        "Runtime, else Keras; engines are built once and cached)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "int8"],
                   help="bfloat16 is native on CPUs with AVX-512 BF16 or AMX; int8 needs "
                        "--calibration (default: float32)")
    p.add_argument("--calibration", metavar="DIR",
                   help="int8: a folder of the images the model will see (a few hundred); a "
                        "quarter is held out to measure agreement with float32")
    p.add_argument("--min-agreement", type=float, default=0.98, metavar="F",
                   help="int8: refuse a model whose top-1 agrees with float32 on less than this "
                        "fraction of the held-out images (default: 0.98)")
    p.set_defaults(needs_keras=False)  # imported after the options are checked


def add_arguments(p):
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files: JPEG, PNG, BMP, WebP, TIFF, GIF... (anything Pillow reads)")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="classes to show per image (default: 5)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image (JSON Lines) instead of text")
    add_model_arguments(p)


def check_model_arguments(args):
    """Fail on bad options in one line, before the slow part (Keras, weights).

    Settles args.model, args.weights and the preprocessing (size, crop_pct, interpolation:
    the weights' own unless given), and sets args.meta to the weights' metadata.
    """
    from senet import catalogue
    from senet.cli import UserError
    from senet.variants import get_variant
    from senet.weights import loader, native

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size}).")
    if args.size is not None and args.size < MIN_SIZE:
        raise UserError(f"--size must be at least {MIN_SIZE} px (got {args.size}).")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1] (got {args.crop_pct:g}); 0.875 is the "
                        "usual 224-of-256 crop, 1 resizes the shorter side to --size.")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers}).")
    if not 0 <= args.min_agreement <= 1:
        raise UserError(f"--min-agreement must be in [0, 1] (got {args.min_agreement:g}).")
    if args.precision == "int8" and not args.calibration:
        raise UserError("--precision int8 needs --calibration DIR: a few hundred of the images "
                        "the model will see.")
    recorded = None
    if args.weights == "none":  # random weights: for speed measurements
        args.weights = None
    elif os.path.isfile(args.weights):
        doc = native.read_header(args.weights)
        recorded = (doc or {}).get("meta", {}).get("model")
    elif os.sep in args.weights or args.weights.endswith(".h5"):
        raise UserError(f"{args.weights}: no such weights file (pass --weights imagenet, a tag, "
                        "or a file written by `senet convert` or `senet train`).")
    elif catalogue.split(args.weights)[1] is not None and args.model is None:
        recorded = catalogue.find(args.weights).arch  # --weights arch.tag names the model
    model = args.model or recorded or DEFAULT_MODEL
    arch, tag = catalogue.split(model)
    if tag is not None:
        if args.weights != "imagenet":
            raise UserError(f"--model {model} names weights, and so does --weights "
                            f"{args.weights}; give the tag in one of them.")
        args.weights = catalogue.find(model).key
    args.model = get_variant(arch).name  # unknown names fail here, with suggestions
    if recorded and recorded != args.model:
        raise UserError(f"{args.weights} holds {recorded} weights, not {args.model}; pass "
                        f"--model {recorded} or leave --model out.")
    args.meta = (loader.resolve(get_variant(args.model), args.weights).meta
                 if args.weights is not None else {"classes": 1000, "class_set": "imagenet-1k"})
    pre = args.meta.get("preprocessing") or {}
    args.size = args.size or pre.get("size") or DEFAULT_SIZE
    args.crop_pct = args.crop_pct or pre.get("crop_pct") or DEFAULT_CROP_PCT
    args.interpolation = args.interpolation or pre.get("interpolation") or "bilinear"


def load_model(args, n_images=None):
    """A `senet.engines.Predictor` for the checked options (its .labels name the outputs).

    --engine auto takes the fastest engine installed, except for a job of a batch or two
    when that engine is not built yet: building it (once) costs more than it would save.
    """
    from senet import engines
    from senet.cli import import_keras_quietly

    engine = engines.choose_engine(args.engine, args.precision)
    batch = args.batch_size  # an engine is compiled for one batch size; the last is padded
    if args.engine == "auto" and engine != "keras" and args.precision != "int8" \
            and n_images is not None and n_images <= 2 * args.batch_size \
            and not engines.is_built(args.model, args.weights, engine=engine,
                                     precision=args.precision, size=args.size):
        engine = "keras"
    if engine == "keras":
        import_keras_quietly()
        batch = min(batch, n_images or batch)
    return engines.inference(args.model, args.weights, engine=engine, precision=args.precision,
                             batch_size=batch, size=args.size, calibration=args.calibration,
                             min_agreement=args.min_agreement)


def predict_batches(predictor, paths, args):
    """Yield (probabilities (n, classes), ok_paths, errors) over `paths`, batch by batch.

    Decoding runs in threads while the model works; the predictor pads the last batch, so a
    compiled model never sees a new shape.
    """
    import warnings

    from PIL import Image

    from senet.images import iter_batches
    from senet.imagenet import preprocess_input

    # Pillow warns between its limit and twice it, then loads; images.py refuses beyond.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    batch = min(args.batch_size, len(paths))
    classes = len(predictor.labels)
    for images, ok, errors in iter_batches(paths, batch, args.size, args.crop_pct, args.workers,
                                           args.interpolation):
        probs = np.zeros((0, classes), np.float32)
        if ok:
            probs = predictor(preprocess_input(images, data_format="channels_last"))
        yield probs, ok, errors


def run(args):
    from senet.cli import UserError

    if args.top < 1:
        raise UserError(f"--top must be at least 1 (got {args.top}).")
    check_model_arguments(args)
    predictor = load_model(args, len(args.images))
    table = predictor.labels
    # A bar only when there is more than one batch to wait for.
    progress = Progress(len(args.images), live=None if len(args.images) > args.batch_size else False)
    failed = 0
    first = True
    for probs, ok, errors in predict_batches(predictor, args.images, args):
        for _, message in errors:
            progress.note(f"senet predict: error: {message}")
        failed += len(errors)
        progress.clear()
        for path, row in zip(ok, probs):
            top = np.argsort(-row, kind="stable")[:min(args.top, len(table))]
            rows = [(table[i][0], table[i][1], float(row[i])) for i in top]
            if args.json:
                print(json.dumps({"image": path, "predictions": [
                    {"wnid": w, "name": n, "probability": p} for w, n, p in rows]}))
            else:
                print(("" if first else "\n") + path)
                for rank, (w, n, p) in enumerate(rows, 1):
                    print(f"  {rank:>2}  {w}  {n:<28} {p:.4f}")
            first = False
        sys.stdout.flush()
        progress.update(len(ok) + len(errors))
    progress.close()
    return 1 if failed else 0
