"""Do glibc's malloc settings that keep freed memory speed up a forward? Keras on JAX and on
PyTorch, and timm, allocate their large buffers afresh on every call, and glibc hands
anything above its mmap threshold (at most 32 MB) back to the kernel when freed, so the
next call takes a page fault per 4 KB page. Started with

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824

a process keeps that memory instead. glibc reads these only when a process starts, so each
side is a worker process of its own (`senet.bench.Worker`), the same step with and without
them, timed alternately (`senet.bench.alternate`).

    python benchmarks/malloc_settings.py [--backends jax,torch,tensorflow] [--timm]
        [--model se_resnet50] [--batch-size 16] [--precision bfloat16] [--rounds 6]

senet's side is `senet.bench.senet_step` with the Keras engine (random weights, as `senet
benchmark`); `--timm` adds timm's model (`timm_peer_step`), the peer, to show that it gains
alike.
"""

from __future__ import annotations

import argparse
import contextlib

SETTINGS = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
            "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="jax,torch,tensorflow")
    p.add_argument("--timm", action="store_true")
    p.add_argument("--model", default="se_resnet50")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args()
    import statistics

    from senet import bench

    shape = dict(name=a.model, precision=a.precision, batch_size=a.batch_size, size=224)
    cases = [(f"senet, Keras on {b}", "senet_step", {**shape, "engine": "keras"}, b)
             for b in a.backends.split(",")]
    if a.timm:
        cases.append(("timm", "timm_peer_step", shape, "torch"))
    print(f"{a.model}, {a.precision}, {a.batch_size} images: with {SETTINGS} against without")
    print("| side | without, images/s | with, images/s | with / without |")
    print("| --- | ---: | ---: | --- |")
    for label, builder, kwargs, backend in cases:
        with contextlib.ExitStack() as stack:
            steps = {k: stack.enter_context(bench.Worker(builder, kwargs, backend, env))
                     for k, env in (("without", {}), ("with", SETTINGS))}
            r = bench.alternate(steps, a.batch_size, a.rounds, warmup=2,
                                iters=1 if a.batch_size > 1 else 10)
        print(f"| {label} | {statistics.median(r['without']):.1f} | "
              f"{statistics.median(r['with']):.1f} | {bench.ratio(r['with'], r['without'])} |",
              flush=True)


if __name__ == "__main__":
    main()
