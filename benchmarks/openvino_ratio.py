"""The headline ratio, measured robustly: senet's default path (OpenVINO on the Keras model's
artifact) against OpenVINO on timm's own ONNX export, alternated round by round.

`senet benchmark` times each row once, one after the other; on a shared machine a burst of
other work during one row moves its ratio by tens of percent. Here both compiled models stay
loaded and are timed alternately for --rounds rounds (`senet.bench.alternate`); the ratio
reported is the median of the per-round ratios (with its range). Run `senet benchmark` (or benchmarks/inference_speed.sh)
first: it builds and caches the artifacts and timm's ONNX files this reuses.

    python benchmarks/openvino_ratio.py --models se_resnet50,se_resnext50_32x4d,senet154
"""

from __future__ import annotations

import argparse
import statistics

from senet import bench, engines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="se_resnet50,se_resnext50_32x4d,senet154")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed batches per round (batch 1)")
    a = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    print("| model | batch | precision | senet images/s | OV-on-timm images/s | ratio (median, range) |")
    print("|---|---:|---|---:|---:|---|")
    for name in a.models.split(","):
        for batch in (int(b) for b in a.batch_sizes.split(",")):
            iters = max(3, a.iters // batch * 2) if batch > 1 else a.iters
            onnx_path = bench._timm_onnx_path(name, 224, batch)
            for precision in a.precisions.split(","):
                ours = engines.inference(name, weights=None, engine="openvino",
                                         precision=precision, batch_size=batch, size=224,
                                         progress=False)
                peer = core.compile_model(onnx_path, "CPU", engines.openvino_config(precision))
                request = peer.create_infer_request()
                x, xt = bench._noise(batch, 224), bench._noise(batch, 224, layout="nchw")
                r = bench.alternate({"senet": lambda: ours(x),
                                     "peer": lambda: request.infer({0: xt})},
                                    batch, a.rounds, warmup=2, iters=iters)
                print(f"| {name} | {batch} | {precision} | {statistics.median(r['senet']):.1f} | "
                      f"{statistics.median(r['peer']):.1f} | {bench.ratio(r['senet'], r['peer'])} |",
                      flush=True)


if __name__ == "__main__":
    main()
