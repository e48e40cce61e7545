"""senet export --model NAME --format savedmodel|onnx|tflite --output PATH"""

from senet.export import FORMATS  # the module imports TensorFlow only when used


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="NAME[.TAG]",
                   help="architecture, optionally with a weights tag (`senet list`)")
    p.add_argument("--weights", metavar="imagenet|TAG|FILE",
                   help="'imagenet', a tag or a senet weights file (default: random weights)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                   help="SavedModel directory, ONNX file or TFLite file")
    p.add_argument("--output", "-o", required=True, metavar="PATH")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="fixed batch size of the exported model (default: dynamic)")
    p.add_argument("--size", type=int, metavar="PX",
                   help="input height and width in pixels (default: the weights' evaluation "
                        "size, else 224)")


def run(args):
    from senet import export
    from senet.bench import image_shape
    from senet.cli import UserError
    from senet.models import create_model

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size}); "
                        "leave it out for a dynamic batch size.")
    export.check_ready(args.fmt)
    # Without --size the builder takes the weights' evaluation size (else 224).
    model = create_model(args.model, weights=args.weights,
                         input_shape=image_shape(args.size) if args.size else None)
    r = export.export(model, args.output, args.fmt, batch_size=args.batch_size)
    batch = "dynamic batch" if args.batch_size is None else f"batch {args.batch_size}"
    weights = args.weights or "random weights (no --weights)"
    print(f"Wrote {r['path']} ({args.fmt}, {r['bytes'] / 1e6:.1f} MB): {r['model']}, {weights}, "
          f"input {tuple(r['input_shape'])} ({batch}). Checked with its runtime: "
          f"max |difference| from Keras {r['max_abs_diff']:.2g}. Took {r['seconds']:.0f} s.")
