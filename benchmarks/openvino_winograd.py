"""Would a Winograd graph beat OpenVINO's own 3x3 convolutions at batch 1? Measured: no.

senet's default path hands OpenVINO the same graph as timm's ONNX export (the same
convolution kernels), so it can only run ahead of OpenVINO-on-timm with a graph OpenVINO does
not make itself. The candidate with the most arithmetic to save: each stride-1 3x3 conv as
Winograd's F(2x2, 3x3), 16 multiplies per 2x2 output tile where the direct conv does 36,
written in OpenVINO's own ops (the tiles' transform as a 4x4/2 convolution with fixed
weights, the products as one batched MatMul, the output transform as a MatMul and a
Transpose). This times it against OpenVINO's convolution on SE-ResNet-50's four 3x3 shapes
at one image (+ bias + ReLU, as the folded graph has them), alternated in one process, and
checks that both compute the same.

    python benchmarks/openvino_winograd.py [--precision f32|bf16] [--rounds 8] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import statistics

import numpy as np

G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
SHAPES = ((64, 56, 3), (128, 28, 4), (256, 14, 6), (512, 8, 3))  # (channels, size, convs);
# SE-ResNet-50's last stage is 7x7, rounded up to 8 here: F(2x2, 3x3) tiles even sizes


def _ints(*v):
    return np.array(v, np.int64)


def direct(op, c, size, w, b):
    x = op.parameter([1, c, size, size], np.float32)
    y = op.convolution(x, op.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
    return x, op.relu(op.add(y, op.constant(b.reshape(1, -1, 1, 1))))


def winograd(op, c, size, w, b):
    k, h = len(w), size // 2
    x = op.parameter([1, c, size, size], np.float32)
    xp = op.pad(x, op.constant(_ints(0, 0, 1, 1)), op.constant(_ints(0, 0, 1, 1)), "constant")
    # channels as the batch: one 1 -> 16 conv, 4x4/2, gives every tile's 16 transformed values
    tiles = np.einsum("ai,bj->abij", BT, BT).reshape(16, 1, 4, 4)
    v = op.convolution(op.reshape(xp, op.constant(_ints(c, 1, size + 2, size + 2)), False),
                       op.constant(tiles), [2, 2], [0, 0], [0, 0], [1, 1])
    v = op.transpose(op.reshape(v, op.constant(_ints(c, 16, h * h)), False),
                     op.constant(_ints(1, 0, 2)))  # (16, c, tiles)
    u = np.einsum("ai,kcij,bj->abkc", G, w, G).reshape(16, k, c)
    m = op.reshape(op.matmul(op.constant(u), v, False, False),
                   op.constant(_ints(16, -1)), False)  # (16, k * tiles)
    out = np.einsum("pa,qb->pqab", AT, AT).reshape(4, 16)
    y = op.reshape(op.matmul(op.constant(out), m, False, False),
                   op.constant(_ints(2, 2, k, h, h)), False)
    y = op.reshape(op.transpose(y, op.constant(_ints(2, 3, 0, 4, 1))),
                   op.constant(_ints(1, k, size, size)), False)
    return x, op.relu(op.add(y, op.constant(b.reshape(1, -1, 1, 1))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--profile", action="store_true", help="also OpenVINO's per-op times")
    a = p.parse_args()
    import openvino as ov
    import openvino.opset13 as op

    from senet import bench

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": a.precision, "PERFORMANCE_HINT": "LATENCY",
              "PERF_COUNT": a.profile}
    rng = np.random.default_rng(0)
    total = collections.Counter()
    print(f"3x3 convs at one image, {a.precision}, median ms of {a.rounds} alternated rounds")
    for c, size, n in SHAPES:
        w = rng.normal(0, (2 / (9 * c)) ** .5, (c, c, 3, 3)).astype(np.float32)
        b = rng.normal(0, .1, c).astype(np.float32)
        x = rng.normal(0, 1, (1, c, size, size)).astype(np.float32)
        requests = {f.__name__: core.compile_model(_model(ov, op, f, c, size, w, b), "CPU",
                                                   config).create_infer_request()
                    for f in (direct, winograd)}
        outs = {k: r.infer({0: x})[0].copy() for k, r in requests.items()}
        speeds = bench.alternate({k: lambda r=r: r.infer({0: x}) for k, r in requests.items()},
                                 1, a.rounds, iters=20)
        ms = {k: 1000 / statistics.median(v) for k, v in speeds.items()}
        for k in ms:
            total[k] += n * ms[k]
        err = np.abs(outs["direct"] - outs["winograd"]).max() / np.abs(outs["direct"]).max()
        print(f"{c:4} channels, {size:3} px: direct {ms['direct']:.3f}, Winograd "
              f"{ms['winograd']:.3f} ({ms['direct'] / ms['winograd']:.2f}x as fast); "
              f"largest difference {err:.1e} of the largest output")
        if a.profile:
            for k, r in requests.items():
                ops = collections.Counter()
                for q in r.get_profiling_info():
                    if q.status == q.Status.EXECUTED:
                        ops[f"{q.node_type}/{q.exec_type}"] += q.real_time.total_seconds() * 1e3
                print(f"    {k}: " + ", ".join(f"{o} {t:.3f}" for o, t in ops.most_common(6)))
    print("SE-ResNet-50's sixteen 3x3 convs: " + ", ".join(f"{k} {v:.1f} ms"
                                                          for k, v in total.items()))


def _model(ov, op, f, c, size, w, b):
    x, y = f(op, c, size, w, b)
    return ov.Model([y], [x])


if __name__ == "__main__":
    main()
