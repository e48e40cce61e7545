"""The default recipe on scikit-learn's digits: `senet train DATA --model se_resnet18` with no
other flag, then `senet evaluate` on the held-out digits, on each Keras backend.

    python benchmarks/train_digits.py [--backends tensorflow,jax,torch] [--work DIR] [--seed N]
                                      [--hflip P]

The 1,797 digits (8x8, 0-16) are written as 32x32 greyscale PNGs (bilinear), the first 1,400
to train/<digit>/, the other 397 to heldout/<digit>/. Prints one line per backend (epochs,
training time, held-out top-1 of the final weights) and writes DIR/results-seed<N>.json
(results-seed<N>-hflip<P>.json with --hflip, senet train's flip probability; by default
the job decides: 0 for digits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_digits(root: Path, size=32, n_train=1400):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        folder = root / ("train" if i < n_train else "heldout") / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(img * 16, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BILINEAR).save(
            folder / f"{i:04d}.png")


def senet(*args, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "senet", *map(str, args)], env=env,
                          capture_output=True, text=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="tensorflow,jax,torch")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--model", default="se_resnet18")
    p.add_argument("--seed", type=int, default=0, help="senet train's --seed (its default: 0)")
    p.add_argument("--hflip", type=float, default=None, help="senet train's --hflip (default 0.5)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="senet-digits-"))
    if not (work / "train").is_dir():
        write_digits(work)
    results = {}
    run = f"seed{args.seed}" + ("" if args.hflip is None else f"-hflip{args.hflip:g}")
    extra = [] if args.hflip is None else ["--hflip", args.hflip]
    for backend in args.backends.split(","):
        out = work / f"run-{backend}-{run}"
        start = time.monotonic()
        r = senet("train", work / "train", "--model", args.model, "--output", out,
                  "--seed", args.seed, *extra, backend=backend)
        seconds = time.monotonic() - start
        if r.returncode:
            print(f"{backend}: senet train failed:\n{r.stderr[-2000:]}")
            continue
        e = senet("evaluate", work / "heldout", "--weights", out / "last.weights.h5",
                  "--json", out / "heldout.json", backend=backend)
        if e.returncode:
            print(f"{backend}: senet evaluate failed:\n{e.stderr[-2000:]}")
            continue
        summary = json.loads((out / "summary.json").read_text())
        held = json.loads((out / "heldout.json").read_text())
        results[backend] = {"seed": args.seed, "hflip": summary.get("hflip"),  # as the job ran
                            "epochs": summary["epochs"],
                            "train_seconds": summary["seconds_total"],
                            "wall_seconds": round(seconds, 1), "heldout_top1": held["top1"],
                            "final_train_accuracy": summary["final"]["accuracy"],
                            "images_per_s": round(1400 * summary["epochs"] /
                                                  summary["seconds_total"], 1)}
        row = results[backend]
        print(f"{backend:10s} {args.model}: {row['epochs']} epochs, {row['train_seconds']:.0f} s "
              f"training ({row['wall_seconds']:.0f} s with start-up), held-out top-1 "
              f"{row['heldout_top1']:.2f}% (397 digits)", flush=True)
    path = work / f"results-{run}.json"  # other backends' results of the same run are kept
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**earlier, **results}, indent=2) + "\n")
    print(f"results: {work / f'results-{run}.json'}")


if __name__ == "__main__":
    main()
