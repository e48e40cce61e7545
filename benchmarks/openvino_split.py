"""Why senet's OpenVINO engine splits a batch across the CPU plugin's streams
(`senet.engines._openvino_runner`): the same compiled graph, one request of the whole
batch with the latency hint against the batch cut into one request a stream with the
throughput hint, in flight together, timed alternately in one process.

    python benchmarks/openvino_split.py [--model se_resnet50,se_resnext50_32x4d]
        [--batch-size 16] [--precision float32,bfloat16] [--rounds 5]

Both sides run senet's own OpenVINO artifact of the model (random weights, 224 px; built
once and cached, as `senet predict` builds it), so the graph is the same and only the way
it is called differs. Prints each side's median images/s and the median of the per-round
ratios (split / whole), with their range, and the largest difference of their outputs.
"""

from __future__ import annotations

import argparse

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_resnet50,se_resnext50_32x4d")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="float32,bfloat16")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import openvino as ov

    from senet import bench, engines

    n = args.batch_size
    x = bench._noise(n, 224)
    print(f"OpenVINO {ov.__version__}, senet's artifact, {n} images: one request of the whole "
          "batch (latency hint) against one request a stream (throughput hint)")
    print("| model | precision | requests | whole, images/s | split, images/s | split / whole "
          "| max difference |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for name in args.model.split(","):
        for precision in args.precision.split(","):
            split = engines.inference(name, weights=None, engine="openvino",
                                      precision=precision, batch_size=n, progress=False)
            core = ov.Core()
            graph = core.read_model(engines.artifact_dir(name, None, engine="openvino",
                                                         precision=precision) / "model.xml")
            shape = graph.inputs[0].get_partial_shape()
            shape[0] = n
            graph.reshape({graph.inputs[0]: shape})
            request = core.compile_model(graph, "CPU",
                                         engines.openvino_config(precision)).create_infer_request()

            def whole():
                return np.array(request.infer({0: x})[0], np.float32)

            diff = np.abs(engines.softmax(whole()) - split(x)).max()
            r = bench.alternate({"whole": whole, "split": lambda: split(x)}, n, args.rounds,
                                warmup=1)
            print(f"| {name} | {precision} | {split.run.requests} | "
                  f"{np.median(r['whole']):.1f} | {np.median(r['split']):.1f} | "
                  f"{bench.ratio(r['split'], r['whole'])} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
