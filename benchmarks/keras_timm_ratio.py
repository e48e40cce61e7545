"""Keras on this backend against timm eager, measured robustly: senet's Keras engine
(`senet.inference(..., engine="keras")`) and timm's model of the same architecture loaded in
a worker process each (`senet.bench.Worker`) and timed alternately, round by round.

`senet benchmark` times each row once, one after the other; on a shared machine a burst of
other work during one row moves its ratio by tens of percent. Here the ratio reported is the
median of the per-round ratios (with its range, `senet.bench.alternate`), as
`openvino_ratio.py` does for OpenVINO. timm runs as `senet benchmark` runs it
(`senet.bench.timm_step`, its memory format chosen once, before the rounds).

Each in its own process because in one process the two runtimes change each other's speed:
TensorFlow in bfloat16 at 16 images, SE-ResNet-50, ran 0.93x as fast with torch imported
first, and timm 1.05x as fast with TensorFlow imported (ad hoc, alternated workers);
`--same-process` read 0.79x where workers read 1.02x (see the README).

    KERAS_BACKEND=jax python benchmarks/keras_timm_ratio.py \
        --models se_resnet50,se_resnext50_32x4d,senet154 --batch-sizes 1,16 \
        --precisions float32,bfloat16 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="se_resnet50,se_resnext50_32x4d,senet154")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed batches per round (batch 1)")
    ap.add_argument("--same-process", action="store_true",
                    help="load both models in this process instead of a worker process each")
    a = ap.parse_args()
    if a.same_process:
        import timm  # noqa: F401  (before Keras: TensorFlow, if it is the backend, loads after it)
    from senet import bench

    backend = bench._current_backend()
    where = "one process" if a.same_process else "a worker process each"
    print(f"Keras on {backend} against timm eager, {where}")
    print("| model | batch | precision | senet images/s | timm images/s | ratio (median, range) |")
    print("|---|---:|---|---:|---:|---|")
    for name in a.models.split(","):
        for batch in (int(b) for b in a.batch_sizes.split(",")):
            iters = max(3, a.iters // batch * 2) if batch > 1 else a.iters
            for precision in a.precisions.split(","):
                ours = dict(name=name, engine="keras", precision=precision, batch_size=batch,
                            size=224)
                theirs = dict(name=name, batch_size=batch, size=224, precision=precision)
                with contextlib.ExitStack() as stack:
                    if a.same_process:
                        steps = {"senet": bench.senet_step(**ours)[0],
                                 "timm": bench.timm_peer_step(**theirs)}
                    else:
                        steps = {"senet": stack.enter_context(bench.Worker("senet_step", ours)),
                                 "timm": stack.enter_context(
                                     bench.Worker("timm_peer_step", theirs))}
                    r = bench.alternate(steps, batch, a.rounds, warmup=2, iters=iters)
                print(f"| {name} | {batch} | {precision} | {statistics.median(r['senet']):.1f} | "
                      f"{statistics.median(r['timm']):.1f} | {bench.ratio(r['senet'], r['timm'])} |",
                      flush=True)


if __name__ == "__main__":
    main()
