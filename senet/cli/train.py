"""senet train DATA --model NAME --output DIR: train from scratch, or fine-tune with --weights.

DATA holds class sub-folders (DATA/<class>/*.jpg), or images with --labels FILE ('name
label' per line, the label a class name). Writes DIR/best.weights.h5 and DIR/last.weights.h5
(usable by `senet predict` and `senet evaluate`), DIR/checkpoint.h5 every epoch (for
--resume), DIR/log.csv, DIR/tensorboard/, DIR/curves.png and DIR/summary.json.
"""

from __future__ import annotations

import os

from senet.images import INTERPOLATIONS


def add_arguments(p):
    from senet.training import FREEZE, SCHEDULES, Recipe

    d = Recipe()
    p.add_argument("data", metavar="DATA", help="class sub-folders, or a flat folder with --labels")
    p.add_argument("--model", required=True, metavar="NAME", help="architecture (`senet list`)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="where weights, checkpoints and logs go (a new or resumable directory)")
    p.add_argument("--weights", metavar="imagenet|TAG|FILE",
                   help="fine-tune from these weights (the classifier is new when the classes "
                        "differ); default: train from scratch")
    p.add_argument("--labels", metavar="FILE", help="'name label' per line for a flat DATA")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", metavar="DIR", help="validation images (the same classes as DATA)")
    val.add_argument("--val-split", type=float, default=0.0, metavar="F",
                     help="hold out this fraction of each class of DATA for validation")
    p.add_argument("--val-labels", metavar="FILE", help="label file for a flat --val folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last checkpoint, with its settings")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, metavar="N",
                   help=f"(default: {d.epochs}; with --resume: a new total, else the recorded)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help=f"images per optimizer step over all devices (default: {d.batch_size})")
    g.add_argument("--accumulate", type=int, default=d.accumulate, metavar="N",
                   help="split each batch into N micro-batches (gradient accumulation)")
    g.add_argument("--size", type=int, metavar="PX",
                   help="training crop size (default: the weights' size; from scratch, the "
                        "images' median shorter side rounded to 32 px, at most 224)")
    g.add_argument("--lr", type=float, metavar="LR",
                   help=f"peak learning rate (default: {d.lr_per_256} x batch size / 256)")
    g.add_argument("--head-lr", type=float, metavar="LR",
                   help="peak learning rate of the classifier (default: --lr)")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help=f"after warm-up (default: {d.schedule}; step: x0.1 every --step-epochs)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, metavar="E")
    g.add_argument("--step-epochs", type=int, default=d.step_epochs, metavar="E")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="WD",
                   help=f"on conv and dense kernels only (default: {d.weight_decay:g})")
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, metavar="F")
    g.add_argument("--freeze", choices=FREEZE, default=d.freeze,
                   help="backbone: train only the classifier; bn: freeze BatchNorm layers")
    g.add_argument("--scale-min", type=float, metavar="F",
                   help="smallest random crop, a fraction of the image area (default: the "
                        "paper's 0.08 at 224 px; 0.08 x 224 / size for smaller, at most 0.5)")
    g.add_argument("--hflip", type=float, metavar="P",
                   help="horizontal-flip probability (default: the paper's 0.5, or 0 when "
                        "mirror images of the training images look like other classes, as "
                        "digits and text do)")
    g.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="Keras' MixUp")
    g.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA", help="Keras' CutMix")
    g.add_argument("--randaugment", action="store_true", help="Keras' RandAugment")
    g.add_argument("--crop-pct", type=float, metavar="F",
                   help="evaluation crop fraction, recorded for predict/evaluate (default 0.875)")
    g.add_argument("--interpolation", choices=list(INTERPOLATIONS))
    g.add_argument("--seed", type=int, default=0)
    e = p.add_argument_group("engine")
    e.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="16-bit compute with float32 weights (Keras' mixed policies)")
    e.add_argument("--distribute", choices=["auto", "none", "mirrored", "multiworker",
                                            "data-parallel"], default="auto",
                   help="auto: multiworker if TF_CONFIG is set, else all GPUs (TensorFlow: "
                        "mirrored; JAX: data-parallel), else one device")
    e.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch (TensorFlow strategies)")
    e.add_argument("--workers", type=int, metavar="N",
                   help="images decoded in parallel (default: autotuned)")
    e.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(needs_keras=False)


def run(args):
    from senet.cli import UserError, import_keras_quietly
    from senet.variants import get_variant

    get_variant(args.model)  # unknown names fail before Keras starts
    if args.size is not None and args.size < 32:
        raise UserError(f"--size must be at least 32 px (got {args.size}).")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1] (got {args.crop_pct:g}).")
    if args.scale_min is not None and not 0 < args.scale_min <= 1:
        raise UserError(f"--scale-min must be in (0, 1] (got {args.scale_min:g}).")
    if args.hflip is not None and not 0 <= args.hflip <= 1:
        raise UserError(f"--hflip must be in [0, 1] (got {args.hflip:g}).")
    if args.weights and args.weights != "imagenet" and (os.sep in args.weights or
                                                        args.weights.endswith(".h5")) \
            and not os.path.isfile(args.weights):
        raise UserError(f"--weights {args.weights}: no such file.")
    import_keras_quietly()
    from senet import training
    from senet.training import Recipe

    recipe = training.Recipe(
        epochs=args.epochs or Recipe().epochs, batch_size=args.batch_size, lr=args.lr,
        head_lr=args.head_lr,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, step_epochs=args.step_epochs,
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, accumulate=args.accumulate, freeze=args.freeze,
        mixup=args.mixup, cutmix=args.cutmix, randaugment=args.randaugment)
    job = training.Job(
        data=args.data, model=args.model, output=args.output, weights=args.weights,
        labels=args.labels, val=args.val, val_labels=args.val_labels, val_split=args.val_split,
        size=args.size, crop_pct=args.crop_pct, interpolation=args.interpolation,
        scale_min=args.scale_min, hflip=args.hflip, seed=args.seed, precision=args.precision,
        distribute=args.distribute, sync_bn=args.sync_bn, resume=args.resume,
        resume_epochs=args.epochs if args.resume else None,
        workers=args.workers, tensorboard=not args.no_tensorboard, recipe=recipe)
    training.train(job)
    return 0
