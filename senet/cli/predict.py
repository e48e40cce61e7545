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
from senet.images import DEFAULT_CROP_PCT
from senet.variants import DEFAULT_SIZE, MIN_SIZE

DEFAULT_MODEL = "se_resnext50_32x4d"


def add_model_arguments(p):
    """The options of every command that runs a classifier over image files."""
    p.add_argument("--model", metavar="NAME",
                   help=f"architecture (default: the one recorded in the --weights file, "
                        f"else {DEFAULT_MODEL}); `senet list` shows them")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|FILE",
                   help="'imagenet' (downloaded once and cached, the default) or a weights "
                        "file written by `senet convert`")
    p.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="images per model call (default: 16)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"crop size fed to the model (default: {DEFAULT_SIZE})")
    p.add_argument("--crop-pct", type=float, default=DEFAULT_CROP_PCT, metavar="F",
                   help="the crop is this fraction of the resized shorter side: resize to "
                        f"floor(size / F), then centre-crop (default: {DEFAULT_CROP_PCT}, "
                        "i.e. 256 then 224)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="image decoding threads (default: CPU count, at most 8)")
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
    """Fail on bad options in one line, before the slow part (Keras, weights)."""
    from senet.cli import UserError
    from senet.variants import get_variant

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size}).")
    if args.size < MIN_SIZE:
        raise UserError(f"--size must be at least {MIN_SIZE} px (got {args.size}).")
    if not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1] (got {args.crop_pct:g}); 0.875 is the "
                        "usual 224-of-256 crop, 1 resizes the shorter side to --size.")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers}).")
    recorded = None
    if args.weights != "imagenet":
        if not os.path.isfile(args.weights):
            raise UserError(f"{args.weights}: no such weights file (pass --weights imagenet, "
                            "or a file written by `senet convert`).")
        from senet.weights import native

        recorded = (native.read_meta(args.weights) or {}).get("model")
    if args.model is None:
        args.model = recorded or DEFAULT_MODEL
    args.model = get_variant(args.model).name  # unknown names fail here, with suggestions
    if recorded and recorded != args.model:
        raise UserError(f"{args.weights} holds {recorded} weights, not {args.model}; pass "
                        f"--model {recorded} or leave --model out.")


def _download_failed(err, name) -> str:
    """A short line for a DownloadError (whose message is a paragraph): why, and the offline way."""
    from senet.variants import get_variant

    reason = str(err).split(". ")[0]  # "Could not download F from S: reason (mirror note)"
    if reason.startswith("Could not download") and ": " in reason:
        reason = reason.split(": ", 1)[1].split(" (SENET_WEIGHTS_MIRROR is set")[0]
    url = get_variant(name).weights_url
    file_name = url.rsplit("/", 1)[-1]
    return (f"cannot download the ImageNet weights of {name}: {reason}. To work offline, fetch "
            f"{url} elsewhere, run `senet convert {file_name} --model {name} --output "
            f"{name}.weights.h5` and pass --weights {name}.weights.h5")


def load_model(args):
    """(model, class order of its outputs) for the checked options."""
    from senet.cli import UserError, import_keras_quietly

    import_keras_quietly()
    import keras

    from senet.models import create_model
    from senet.weights.hub import DownloadError

    s = args.size
    channels_first = keras.config.image_data_format() == "channels_first"
    try:
        model = create_model(args.model, weights=args.weights,
                             input_shape=(3, s, s) if channels_first else (s, s, 3))
    except DownloadError as err:
        raise UserError(_download_failed(err, args.model)) from None
    classes = model.output_shape[-1]
    if classes != 1000:
        raise UserError(f"{args.weights}: the classifier has {classes} classes; this command "
                        "needs an ImageNet (1000-class) classifier.")
    meta = getattr(model, "senet_weights", None) or {}
    return model, meta.get("class_order", "sorted")


def predict_batches(model, paths, args):
    """Yield (probabilities (n, 1000), ok_paths, errors) over `paths`, batch by batch.

    Decoding runs in threads while the model works. The last batch is padded to the
    batch size so the compiled model never sees a new shape.
    """
    import warnings

    import keras
    from PIL import Image

    from senet.images import iter_batches
    from senet.imagenet import preprocess_input

    # Pillow warns between its limit and twice it, then loads; images.py refuses beyond.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    channels_first = keras.config.image_data_format() == "channels_first"
    batch = min(args.batch_size, len(paths))
    for images, ok, errors in iter_batches(paths, batch, args.size, args.crop_pct, args.workers):
        probs = np.zeros((0, 1000), np.float32)
        if ok:
            x = preprocess_input(images, data_format="channels_last")
            if channels_first:
                x = x.transpose(0, 3, 1, 2)
            n = len(x)
            if n < batch:
                x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
            probs = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(x)))[:n]
        yield probs, ok, errors


def run(args):
    from senet.cli import UserError
    from senet.imagenet import class_table

    check_model_arguments(args)
    if not 1 <= args.top <= 1000:
        raise UserError(f"--top must be between 1 and 1000 (got {args.top}).")
    model, order = load_model(args)
    table = class_table(order)
    # A bar only when there is more than one batch to wait for.
    progress = Progress(len(args.images), live=None if len(args.images) > args.batch_size else False)
    failed = 0
    first = True
    for probs, ok, errors in predict_batches(model, args.images, args):
        for _, message in errors:
            progress.note(f"senet predict: error: {message}")
        failed += len(errors)
        progress.clear()
        for path, row in zip(ok, probs):
            top = np.argsort(-row, kind="stable")[:args.top]
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
