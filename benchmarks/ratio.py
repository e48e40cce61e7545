"""A speed ratio measured robustly: one senet path against one peer, each in a worker process
of its own (`senet.bench.Worker`), timed alternately, round by round.

`senet benchmark` times each row once, one after the other; on a shared machine a burst of
other work during one row moves its ratio by tens of percent. Here both stay loaded and are
timed in turn for --rounds rounds, the order reversed every other round
(`senet.bench.alternate`); the ratio reported is the median of the per-round ratios, with
their range.

Each side has a process of its own because in one process two runtimes change each other's
speed: TensorFlow in bfloat16 at 16 images, SE-ResNet-50, ran 0.93x as fast with torch
imported first, and timm 1.05x as fast with TensorFlow imported (ad hoc, alternated workers);
`--same-process` read 0.79x where workers read 1.02x (see the README).

    # the default path (`senet predict`) against OpenVINO on timm's own ONNX export
    python benchmarks/ratio.py --engine auto --peer openvino
    # Keras on a backend against timm eager
    KERAS_BACKEND=jax python benchmarks/ratio.py --engine keras --peer timm
    # Keras on TensorFlow against ONNX Runtime on timm's export
    python benchmarks/ratio.py --engine keras --peer onnxruntime --precisions float32

`--control` adds a second worker of senet's own side, alternated with the other two: the
ratio of two identical workers is this harness' noise floor (what two processes running the
same thing read apart on the shared machine), the scale below which senet against the peer
says nothing.

    python benchmarks/ratio.py --engine auto --peer openvino --batch-sizes 1 \
        --precisions bfloat16 --control

Peers run as `senet benchmark` runs them: timm through `senet.bench.timm_step` (its memory
format chosen before the rounds), OpenVINO compiled with senet's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

from senet import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="se_resnet50,se_resnext50_32x4d,senet154")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--engine", default="auto", help="senet's engine (auto: what predict runs)")
    ap.add_argument("--peer", default="openvino", choices=bench.PEERS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed batches per round (batch 1)")
    ap.add_argument("--same-process", action="store_true",
                    help="load both in this process instead of a worker process each")
    ap.add_argument("--control", action="store_true",
                    help="also a second senet worker: the ratio of two identical ones")
    a = ap.parse_args()
    if a.peer == "onnxruntime" and a.precisions != "float32":
        ap.error("ONNX Runtime has no bfloat16 CPU kernels: use --precisions float32")
    if a.same_process and a.peer == "timm":
        import timm  # noqa: F401  (before Keras: TensorFlow, if it is the backend, loads after it)
    peer_builder = "timm_peer_step" if a.peer == "timm" else "onnx_peer_step"
    where = "one process" if a.same_process else "a worker process each"
    print(f"senet --engine {a.engine} (Keras on {bench._current_backend()}) against {a.peer}, "
          f"{where}")
    control = " senet / senet again (median, range) |" if a.control else ""
    print(f"| model | batch | precision | senet images/s | {a.peer} images/s | "
          f"ratio (median, range) |{control}")
    print("|---|---:|---|---:|---:|---|" + ("---|" if a.control else ""))
    for name in a.models.split(","):
        for batch in (int(b) for b in a.batch_sizes.split(",")):
            iters = max(3, a.iters // batch * 2) if batch > 1 else a.iters
            for precision in a.precisions.split(","):
                shape = dict(name=name, precision=precision, batch_size=batch, size=224)
                sides = {"senet": ("senet_step", {**shape, "engine": a.engine}),
                         a.peer: (peer_builder, {**shape, "engine": a.peer}
                                  if a.peer != "timm" else shape)}
                if a.control:
                    sides["senet again"] = sides["senet"]
                with contextlib.ExitStack() as stack:
                    steps = {k: getattr(bench, b)(**kw) if a.same_process
                             else stack.enter_context(bench.Worker(b, kw))
                             for k, (b, kw) in sides.items()}
                    r = bench.alternate(steps, batch, a.rounds, warmup=2, iters=iters)
                print(f"| {name} | {batch} | {precision} | {statistics.median(r['senet']):.1f} | "
                      f"{statistics.median(r[a.peer]):.1f} | "
                      f"{bench.ratio(r['senet'], r[a.peer])} |"
                      + (f" {bench.ratio(r['senet'], r['senet again'])} |" if a.control else ""),
                      flush=True)


if __name__ == "__main__":
    main()
