"""senet convert SRC --model NAME[.TAG] --output OUT.weights.h5"""

from senet.weights.sources import KINDS


def add_arguments(p):
    p.add_argument("source", metavar="SRC",
                   help=".caffemodel, PyTorch .pth/.bin, .safetensors, TF1 checkpoint (prefix, "
                        ".index or directory), or a senet weights file")
    p.add_argument("--model", required=True, metavar="NAME[.TAG]",
                   help="architecture of the weights (`senet list`); with a catalogue tag "
                        "(`senet list --pretrained`), e.g. seresnet50.a1_in1k, the file is taken "
                        "as that entry's: its classes and preprocessing are recorded")
    p.add_argument("--output", "-o", required=True, metavar="OUT.weights.h5")
    p.add_argument("--from", dest="kind", choices=KINDS,
                   help="source format (default: detected from the file's content)")
    p.add_argument("--prototxt", metavar="P", help="the deploy .prototxt (Caffe only; "
                   "gives BatchNorm eps when the caffemodel lacks it)")
    p.add_argument("--class-order", choices=["sorted", "devkit"], default="sorted",
                   help="classifier output order: sorted wnids (Keras/timm, default) or the "
                        "ILSVRC2012 devkit order of the official Caffe models")


def run(args):
    from senet.cli import UserError
    from senet.conversion import convert

    if not args.output.endswith(".weights.h5"):
        raise UserError(f"--output must end in .weights.h5 (got {args.output!r}).")
    if args.prototxt and (args.kind or "") not in ("", "caffe"):
        raise UserError("--prototxt only applies to Caffe sources.")
    meta = convert(args.source, args.model, args.output, kind=args.kind,
                   prototxt=args.prototxt, class_order=args.class_order)
    source = meta.get("source", {})
    what = f" as {meta['tag']}" if meta.get("tag") else ""
    print(f"Wrote {args.output}: {meta['model']}{what} from {source.get('kind')} file "
          f"{source.get('file')}, input {meta['input']}, {meta['classes']} classes in "
          f"{meta.get('class_order', 'their')} order.")
    if meta.get("tag") and source.get("published") is False:
        print(f"Note: {args.source} is not the published file of {meta['tag']} (its sha256 "
              f"{source.get('sha256')} differs from the catalogue's); its layers fit the "
              "architecture, and the output records that it is unverified.")
