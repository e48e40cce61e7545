"""Training speed: images/s of one forward + backward + SGD step, senet on each Keras backend
beside timm's training step (eager PyTorch, channels_last), at the same batch and size.

    python benchmarks/train_speed.py [--models se_resnet50,se_resnext50_32x4d]
        [--backends tensorflow,jax,torch] [--batch-size 32] [--size 224] [--iters 5]

Each measurement runs in its own process. senet: `model.train_on_batch` (Keras' compiled
training step) with the recipe's optimizer (`senet.training.SGD`: momentum 0.9, kernel
weight decay) and label-smoothed cross-entropy on random inputs, after 2 warm-up steps
(compilation). timm: `legacy_seresnet50` etc. in train mode, channels_last, torch.optim.SGD
(momentum 0.9, weight decay 1e-4) and cross-entropy, the same warm-up. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KERAS = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import keras
    from senet import training
    from senet.models import create_model
    name, batch, size, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    model = create_model(name, classes=1000, input_shape=(size, size, 3), classifier_activation=None)
    recipe = training.Recipe(batch_size=batch)
    model.compile(optimizer=recipe.optimizer(1000), loss=recipe.loss())
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (batch, size, size, 3)).astype("float32")
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, batch)]
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    print(json.dumps({"seconds": times}))
""")

TIMM = textwrap.dedent("""
    import json, sys, time
    import timm, torch
    name, batch, size, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    model = timm.create_model(name, pretrained=False).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.0125, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    for _ in range(2):
        step()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"seconds": times}))
""")


def measure(code, args, backend=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if backend:
        env["KERAS_BACKEND"] = backend
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                       capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1][:200]
    times = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
    return sorted(times)[len(times) // 2], None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="se_resnet50,se_resnext50_32x4d")
    p.add_argument("--backends", default="tensorflow,jax,torch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    from senet.variants import get_variant

    print(f"| model, batch {args.batch_size}, {args.size} px | engine | images/s | median step s |")
    print("| --- | --- | ---: | ---: |")
    for name in args.models.split(","):
        runs = [(f"senet, Keras on {b}", KERAS, b) for b in args.backends.split(",")]
        runs.append((f"timm {get_variant(name).timm}, eager PyTorch, channels_last", TIMM, None))
        for label, code, backend in runs:
            model = get_variant(name).timm if code is TIMM else name
            median, error = measure(code, [model, args.batch_size, args.size, args.iters], backend)
            if error:
                print(f"| {name} | {label} | failed: {error} | |", flush=True)
            else:
                print(f"| {name} | {label} | {args.batch_size / median:.1f} | {median:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
