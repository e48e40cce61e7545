"""Does an OpenVINO CPU setting make senet's default path faster? The same artifact, called
as `senet predict` calls it (`senet.engines._openvino_runner`: the latency hint for one
image, the batch split across streams for more), compiled with senet's configuration and
with the setting added, timed alternately in one process; and, beside them, timm's own ONNX
export compiled both ways, the peer of `senet benchmark`.

    python benchmarks/openvino_setting.py [--set CPU_DENORMALS_OPTIMIZATION=True]
        [--model se_resnet50,se_resnext50_32x4d] [--batch-size 1,16]
        [--precision float32,bfloat16] [--rounds 6]

Without `--set`, each side is compiled twice with the same configuration: how far apart two
copies of one graph read in one process, the floor below which a setting's effect (or
senet against the peer) cannot be told from the machine's noise.

The nets are the benchmark's (`senet.bench`: seeded random weights, BatchNorms drawn like a
trained net's; senet's artifact built once and cached, as `senet benchmark` builds it).
Prints images/s, the median of the per-round ratios (with the setting / without), with
their range, and senet's against the peer's without the setting.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the engine build's route
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _value(text):
    return {"true": True, "false": False}.get(text.lower(), text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", metavar="KEY=VALUE", help="default: none (two copies)")
    p.add_argument("--model", default="se_resnet50,se_resnext50_32x4d")
    p.add_argument("--batch-size", default="1,16")
    p.add_argument("--precision", default="float32,bfloat16")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    key, _, value = (args.set or "").partition("=")
    setting = {key: _value(value)} if key else {}
    import keras
    import numpy as np
    import openvino as ov

    from senet import bench, engines

    engines.no_telemetry()

    print(f"OpenVINO {ov.__version__}: {args.set or 'a second copy'} against senet's "
          "configuration")
    print("| model | precision | batch | side | without, images/s | with, images/s | with / "
          "without | senet / peer, without |")
    print("| --- | --- | ---: | --- | ---: | ---: | --- | --- |")
    for name in args.model.split(","):
        model = bench._random_model(name, 224, keras.backend.backend(), "float32",
                                    keras.config.image_data_format())
        for precision in args.precision.split(","):
            directory = engines.artifact_dir(model, engine="openvino", precision=precision)
            if not (directory / "build.json").is_file():  # built as `senet benchmark` builds it
                engines.inference(model, engine="openvino", precision=precision, progress=False)
            for batch in (int(b) for b in args.batch_size.split(",")):
                x, nchw = bench._noise(batch, 224), bench._noise(batch, 224, layout="nchw")
                onnx = bench._timm_onnx_path(name, 224, batch)
                if not os.path.exists(onnx):  # made as the benchmark makes it
                    bench.onnx_peer_step(name, "openvino", precision, batch)
                core = ov.Core()
                config = engines.openvino_config(precision)
                peer = {k: core.compile_model(onnx, "CPU", {**config, **extra})
                        .create_infer_request() for k, extra in (("without", {}),
                                                                  ("with", setting))}
                senet = [engines._openvino_runner(directory, precision, batch, extra)
                         for extra in ({}, setting)]
                steps = {"senet without": lambda: senet[0](x), "senet with": lambda: senet[1](x),
                         "peer without": lambda: peer["without"].infer({0: nchw}),
                         "peer with": lambda: peer["with"].infer({0: nchw})}
                r = bench.alternate(steps, batch, args.rounds, warmup=1,
                                    iters=1 if batch > 1 else 10)
                versus = bench.ratio(r["senet without"], r["peer without"])
                for side in ("senet", "peer"):
                    off, on = r[f"{side} without"], r[f"{side} with"]
                    print(f"| {name} | {precision} | {batch} | {side} | {np.median(off):.1f} | "
                          f"{np.median(on):.1f} | {bench.ratio(on, off)} | "
                          f"{versus if side == 'senet' else ''} |", flush=True)


if __name__ == "__main__":
    main()
