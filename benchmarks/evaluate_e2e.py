"""`senet evaluate` end to end on real JPEGs: images/s with decoding, next to the model alone,
and the process's memory over thousands of images (it must stay flat).

    python benchmarks/evaluate_e2e.py --model seresnext50_32x4d --images 2000 [--engine auto]
        [--precision float32|bfloat16]

The images are the 100 ImageNet photos of ../shared/data/imagenet-sample/, linked (not
copied) many times into a temporary wnid-folder tree; the weights are random (speed and
memory do not depend on them; accuracy is not measured). Memory is the resident set size,
sampled every 0.2 s by a thread while `senet evaluate` runs in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "imagenet-sample")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seresnext50_32x4d")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--engine", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    if not os.path.isdir(SAMPLE):
        sys.exit(f"{SAMPLE} is absent: this benchmark needs the shared ImageNet sample.")
    from senet import bench, engines
    from senet.cli import main as senet

    photos = sorted(os.listdir(SAMPLE))
    with tempfile.TemporaryDirectory(prefix="senet-e2e-") as d:
        root = os.path.join(d, "val")
        for i in range(args.images):
            name = photos[i % len(photos)]
            folder = os.path.join(root, name.split("_")[0])
            os.makedirs(folder, exist_ok=True)
            os.symlink(os.path.join(os.path.abspath(SAMPLE), name),
                       os.path.join(folder, f"{i:06d}_{name}"))
        # The engine `evaluate --weights none` runs, built (once) and timed alone first.
        engine = engines.choose_engine(args.engine, args.precision)
        predictor = engines.inference(args.model, weights=None, engine=engine,
                                      precision=args.precision, batch_size=args.batch_size,
                                      size=224)
        x = bench._noise(args.batch_size, 224)
        model_alone = bench._time(lambda: predictor(x), args.batch_size, warmup=2, iters=6)
        del predictor
        samples, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                samples.append((time.monotonic(), rss_mb()))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        report = os.path.join(d, "evaluate.json")
        code = senet(["evaluate", root, "--json", report, "--model", args.model,
                      "--weights", "none", "--engine", engine, "--precision", args.precision,
                      "--batch-size", str(args.batch_size),
                      "--size", "224", "--crop-pct", "0.875", "--interpolation", "bilinear"])
        with open(report) as f:
            seconds = json.load(f)["seconds"]  # the images' loop: decoding and the model
        stop.set()
        watcher.join()
    quarter = max(1, len(samples) // 4)
    early = max(m for _, m in samples[:quarter])
    late = max(m for _, m in samples[-quarter:])
    print(f"\n{args.model}, {engine} {args.precision}, batch {args.batch_size}, {args.images} "
          f"real JPEGs (exit {code}):")
    print(f"  end to end (decode + model): {args.images / seconds:6.1f} images/s")
    print(f"  model alone:                 {model_alone['images_per_s']:6.1f} images/s")
    print(f"  resident memory: {early:.0f} MB in the first quarter of the run, {late:.0f} MB in "
          f"the last (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB)")


if __name__ == "__main__":
    main()
