"""Where OpenVINO spends a forward, op type by op type: senet's graph as its engine build
converts it (with and without moving the stem's Pad into the MaxPool) against timm's own ONNX
export, all compiled as `senet predict` compiles them, with OpenVINO's per-op counters on.

Wall times on a shared machine move by tens of percent between runs; the counters of one op
type do not, so this is how to see what differs between the graphs, and what a graph change
saves. Random weights (the kernels do not care), 224 px.

    python benchmarks/openvino_ops.py --model seresnext50_32x4d --batch-size 16 --precision bfloat16
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the engine build's route
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def profile(compiled, x, runs):
    """{op type/kernel: median ms per forward} and the median of the per-op sums."""
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: x})
    per_run = []
    for _ in range(runs):
        request.infer({0: x})
        ops = collections.Counter()
        for p in request.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                ops[f"{p.node_type}/{p.exec_type}"] += p.real_time.total_seconds() * 1000
        per_run.append(ops)
    kinds = set().union(*per_run)
    return ({k: statistics.median(r[k] for r in per_run) for k in kinds},
            statistics.median(sum(r.values()) for r in per_run))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="seresnext50_32x4d")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--runs", type=int, default=6)
    a = ap.parse_args()
    from senet import engines

    engines.no_telemetry()
    import numpy as np
    import openvino as ov
    import tensorflow as tf

    import senet
    from senet import bench, export

    core = ov.Core()
    config = {**engines.openvino_config(a.precision), "PERF_COUNT": True}
    b = a.batch_size
    with tempfile.TemporaryDirectory(prefix="senet-ops-") as tmp:
        model = senet.create_model(a.model, weights=None, classifier_activation=None)
        saved, xml = os.path.join(tmp, "savedmodel"), os.path.join(tmp, "model.xml")
        export.write_saved_model(model, saved, tf.TensorSpec((None, 224, 224, 3), tf.float32))
        ov.save_model(ov.convert_model(saved), xml, compress_to_fp16=False)
        plain = core.read_model(xml)
        fused = engines._pad_into_max_pool(plain.clone())
    x = np.random.default_rng(0).uniform(-128, 128, (b, 224, 224, 3)).astype(np.float32)
    graphs = {}
    for label, m in (("senet, Pad kept", plain), ("senet (as built)", fused)):
        m.reshape({m.inputs[0]: ov.PartialShape([b, 224, 224, 3])})
        graphs[label] = profile(core.compile_model(m, "CPU", config), x, a.runs)
    onnx_path = bench._timm_onnx_path(a.model, 224, b)
    if not os.path.exists(onnx_path):  # timm's export, made in a PyTorch child as the benchmark does
        bench._in_child("timm_run", {"name": a.model, "batch_size": b, "size": 224, "warmup": 0,
                                     "iters": 1, "onnx_path": onnx_path}, "torch")
    graphs["timm's ONNX"] = profile(core.compile_model(onnx_path, "CPU", config),
                                    np.transpose(x, (0, 3, 1, 2)).copy(), a.runs)
    labels = list(graphs)
    kinds = sorted(set().union(*(g[0] for g in graphs.values())),
                   key=lambda k: -max(g[0].get(k, 0) for g in graphs.values()))
    print(f"{a.model}, batch {b}, {a.precision}: median ms per forward of {a.runs}, by op")
    print(f"{'op/kernel':44}" + "".join(f"{l:>18}" for l in labels))
    for k in kinds:
        print(f"{k:44}" + "".join(f"{graphs[l][0].get(k, 0):18.2f}" for l in labels))
    print(f"{'all ops':44}" + "".join(f"{graphs[l][1]:18.1f}" for l in labels))
    pool = {l: sum(v for k, v in graphs[l][0].items() if k.split("/")[0] in ("Pad", "MaxPool"))
            for l in labels}
    kept, built = pool[labels[0]], pool[labels[1]]
    print(f"Pad + MaxPool: {kept:.2f} ms kept, {built:.2f} ms moved: "
          f"{100 * (kept - built) / graphs[labels[0]][1]:.1f}% of the forward saved")


if __name__ == "__main__":
    main()
