"""senet convert SRC --model NAME --output OUT.weights.h5"""

from senet.variants import VARIANTS


def add_arguments(p):
    p.add_argument("source", metavar="SRC",
                   help=".caffemodel, PyTorch .pth, TF1 checkpoint (prefix, .index or directory), "
                        "or a senet weights file")
    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"architecture of the weights: {', '.join(VARIANTS)}")
    p.add_argument("--output", "-o", required=True, metavar="OUT.weights.h5")
    p.add_argument("--from", dest="kind", choices=["caffe", "torch", "tf1", "senet"],
                   help="source format (default: detected from the file's content)")
    p.add_argument("--prototxt", metavar="P", help="the deploy .prototxt (Caffe only; "
                   "gives BatchNorm eps when the caffemodel lacks it)")
    p.add_argument("--class-order", choices=["sorted", "devkit"], default="sorted",
                   help="classifier output order: sorted wnids (Keras/timm, default) or the "
                        "ILSVRC2012 devkit order of the official Caffe models")


def run(args):
    from senet.cli import UserError
    from senet.weights.convert import convert

    if not args.output.endswith(".weights.h5"):
        raise UserError(f"--output must end in .weights.h5 (got {args.output!r}).")
    if args.prototxt and (args.kind or "") not in ("", "caffe"):
        raise UserError("--prototxt only applies to Caffe sources.")
    meta = convert(args.source, args.model, args.output, kind=args.kind,
                   prototxt=args.prototxt, class_order=args.class_order)
    print(f"Wrote {args.output}: {meta['model']} from {meta['source']['kind']} file "
          f"{meta['source']['file']}, input {meta['input']}, classes in {meta['class_order']} order.")
