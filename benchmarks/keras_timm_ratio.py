"""Keras on this backend against timm eager, measured robustly: senet's Keras engine
(`senet.inference(..., engine="keras")`) and timm's model of the same architecture loaded in
one process and timed alternately, round by round.

`senet benchmark` times each row once, one after the other; on a shared machine a burst of
other work during one row moves its ratio by tens of percent. Here the ratio reported is the
median of the per-round ratios (with its range, `senet.bench.alternate`), as
`openvino_ratio.py` does for OpenVINO. timm runs as `senet benchmark` runs it
(`senet.bench.timm_step`, its memory format chosen once, before the rounds).

    KERAS_BACKEND=jax python benchmarks/keras_timm_ratio.py \
        --models se_resnet50,se_resnext50_32x4d,senet154 --batch-sizes 1,16 \
        --precisions float32,bfloat16 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="se_resnet50,se_resnext50_32x4d,senet154")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed batches per round (batch 1)")
    a = ap.parse_args()
    import timm  # before Keras: TensorFlow, if it is the backend, loads after it

    import keras

    from senet import bench, engines

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
                peer = timm.create_model(bench.TIMM_PEERS[name], pretrained=False).eval()
                theirs, _, _ = bench.timm_step(peer, batch, 224, precision, warmup=1, iters=3)
                r = bench.alternate({"senet": lambda: ours(x), "timm": theirs}, batch,
                                    a.rounds, warmup=2, iters=iters)
                print(f"| {name} | {batch} | {precision} | {statistics.median(r['senet']):.1f} | "
                      f"{statistics.median(r['timm']):.1f} | {bench.ratio(r['senet'], r['timm'])} |",
                      flush=True)


if __name__ == "__main__":
    main()
