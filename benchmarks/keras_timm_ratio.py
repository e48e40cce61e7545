"""Keras on this backend against timm eager, measured robustly: senet's Keras engine
(`senet.inference(..., engine="keras")`) and timm's model of the same architecture loaded in
one process and timed alternately, round by round.

`senet benchmark` times each row once, one after the other; on a shared machine a burst of
other work during one row moves its ratio by tens of percent. Here the ratio reported is the
median of the per-round ratios (with its range), as `openvino_ratio.py` does for OpenVINO.
timm runs as `senet benchmark` runs it: `torch.inference_mode()`, the faster of NCHW and
channels_last (chosen once, before the rounds), bfloat16 under CPU autocast.

    KERAS_BACKEND=jax python benchmarks/keras_timm_ratio.py \
        --models se_resnet50,se_resnext50_32x4d,senet154 --batch-sizes 1,16 \
        --precisions float32,bfloat16 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics


def _timm(name, batch, precision):
    """timm's model as a one-batch step in its faster memory format."""
    import timm
    import torch

    from senet import bench

    model = timm.create_model(bench.TIMM_PEERS[name], pretrained=False).eval()
    x = torch.from_numpy(bench._noise(batch, 224, layout="nchw"))
    steps = {fmt: (copy.deepcopy(model).to(memory_format=fmt), x.contiguous(memory_format=fmt))
             for fmt in (torch.contiguous_format, torch.channels_last)}

    def step(fmt):
        m, xf = steps[fmt]
        autocast = (contextlib.nullcontext() if precision == "float32"
                    else torch.autocast("cpu", dtype=getattr(torch, precision)))
        with torch.inference_mode(), autocast:
            m(xf)

    best = max(steps, key=lambda f: bench._time(lambda: step(f), batch, 1, 3)["images_per_s"])
    return lambda: step(best)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="se_resnet50,se_resnext50_32x4d,senet154")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed batches per round (batch 1)")
    a = ap.parse_args()
    import timm  # noqa: F401 - before Keras: TensorFlow, if it is the backend, loads after them
    import torch

    import keras

    from senet import bench, engines

    torch.set_grad_enabled(False)
    print(f"Keras on {keras.backend.backend()} against timm eager")
    print("| model | batch | precision | senet images/s | timm images/s | ratio (median, range) |")
    print("|---|---:|---|---:|---:|---|")
    for name in a.models.split(","):
        for batch in (int(b) for b in a.batch_sizes.split(",")):
            iters = max(3, a.iters // batch * 2) if batch > 1 else a.iters
            x = bench._noise(batch, 224)
            for precision in a.precisions.split(","):
                ours = engines.inference(name, weights=None, engine="keras",
                                         precision=precision, batch_size=batch, size=224,
                                         progress=False)
                theirs = _timm(name, batch, precision)
                mine, peer = [], []
                for _ in range(a.rounds):
                    mine.append(bench._time(lambda: ours(x), batch, 2, iters)["images_per_s"])
                    peer.append(bench._time(theirs, batch, 2, iters)["images_per_s"])
                ratios = [m / t for m, t in zip(mine, peer)]
                print(f"| {name} | {batch} | {precision} | {statistics.median(mine):.1f} | "
                      f"{statistics.median(peer):.1f} | {statistics.median(ratios):.2f}x "
                      f"({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
