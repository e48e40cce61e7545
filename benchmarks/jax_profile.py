"""Where a model's Keras-on-JAX forward spends its time, as the Keras engine runs it: a
profile of its compiled programs, the time of each compiled op attributed to the model's
layer it came from, by kind of layer, with the GFLOP/s of the convolutions.

    KERAS_BACKEND=jax python benchmarks/jax_profile.py [--model senet154]
        [--precision bfloat16|float32] [--batch-size 16] [--steps 2] [--top 12]

`jax.profiler` traces each of the engine's programs (`senet.engines._jax_forward`; a model
it leaves to Keras' `predict_on_batch` as the one program Keras compiles) with XLA:CPU's
per-op trace events on (`--xla_cpu_enable_xprof_traceme=true`, added to XLA_FLAGS). Each
event is one compiled op (a fusion, a matrix product, a copy); the op's HLO metadata names
the Keras layer it was traced from. Per kind of layer: the ms a forward spends in ops that
multiply (a matrix product or a convolution, with whatever XLA fused into them) and in the
rest (copies, elementwise work), and the layer's useful arithmetic over the first (a
grouped conv's useful GFLOP, not the zeros of senet's block-diagonal chunks). Then the
`--top` layer names (the unit number replaced by *) by time. Random weights and inputs.
No library gives this per-layer breakdown for XLA:CPU: TensorBoard's profile plugin shows
the ops, not the Keras layers, nor the arithmetic.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import numpy as np

NO_LAYER = "(no layer: XLA's own copies and converts)"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")


def _instructions(hlo):
    """Each instruction of a compiled module's text: name -> (Keras op path, multiplies?).
    A fusion multiplies if the computation it calls holds a dot or a convolution."""
    multiplies, calls, found, computation = set(), {}, {}, None
    for line in hlo.splitlines():
        top = _COMPUTATION.match(line)
        if top and not line.startswith(" "):
            computation = top[1]
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        if m[2] in ("dot", "convolution"):
            multiplies.add(computation)
        callee = re.search(r"calls=%?([\w.\-]+)", line)
        path = re.search(r'op_name="([^"]*)"', line)
        found[m[1]] = (m[2], path[1] if path else "")
        if callee:
            calls[m[1]] = callee[1]
    return {name: (path, opcode in ("dot", "convolution") or calls.get(name) in multiplies)
            for name, (opcode, path) in found.items()
            if opcode not in ("while", "call", "conditional")}  # their bodies' ops are traced


def _traced(program, args, steps, ops):
    """Microseconds of `steps` calls of one program spent in each compiled op (name -> us).
    XLA:CPU runs independent ops at the same time (a unit's shortcut conv beside its first
    convs), so each stretch of time is shared among the ops running then: the shares add up
    to the time some op ran, and no op's speed reads low for having shared the cores."""
    import jax

    with tempfile.TemporaryDirectory(prefix="senet-profile-") as d:
        with jax.profiler.trace(d):
            for _ in range(steps):
                jax.block_until_ready(program(*args))
        with gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]) as f:
            events = json.load(f)
    edges = []
    for i, e in enumerate(events["traceEvents"]):
        if e.get("ph") == "X" and "dur" in e and e["name"] in ops:
            edges += [(e["ts"], 1, i, e["name"]), (e["ts"] + e["dur"], -1, i, e["name"])]
    total, running, last = collections.Counter(), {}, None
    for t, change, i, name in sorted(edges):
        if running:
            for op in running.values():
                total[op] += (t - last) / len(running)
        if change > 0:
            running[i] = name
        else:
            running.pop(i, None)
        last = t
    return total


def _layer_kinds(model, batch):
    """Layer name -> (kind, useful GFLOP per forward)."""
    kinds = {}
    for layer in model.layers:
        kind, flops = type(layer).__name__, 0.0
        if hasattr(layer, "kernel_size"):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            kind = f"{kh}x{kw} conv" + (f", {layer.groups} groups" if layer.groups > 1 else "")
            flops = 2 * np.prod(layer.output.shape[1:]) * kh * kw * cin / layer.groups
        elif kind == "Dense":
            flops = 2 * layer.input.shape[-1] * layer.units
        kinds[layer.name] = (kind, batch * flops / 1e9)
    return kinds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="senet154")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="forwards traced")
    p.add_argument("--top", type=int, default=12, help="layer names listed")
    args = p.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()
    import jax
    import keras

    from senet import bench, engines
    from senet.models import create_model

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    keras.config.set_dtype_policy("mixed_bfloat16" if args.precision == "bfloat16"
                                  else "float32")
    try:
        model = create_model(args.model, weights=None)
    finally:
        keras.config.set_dtype_policy("float32")
    forward = engines._jax_forward(model) or engines._jax_programs(model, [])
    x = bench._noise(args.batch_size, 224)
    for _ in range(2):
        np.asarray(forward(x))
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        np.asarray(forward(x))
        walls.append(time.perf_counter() - t0)

    kinds = _layer_kinds(model, args.batch_size)
    times = collections.defaultdict(lambda: [0.0, 0.0])  # layer -> [multiplying, other] ms
    for program, trainable, other in forward.programs:
        call = (trainable(), other(), x)
        ops = _instructions(program.lower(*call).compile().as_text())
        for name, us in _traced(program, call, args.steps, ops).items():
            path, multiplies = ops[name]
            layer = next((c for c in path.split("/") if c in kinds), NO_LAYER)
            times[layer][0 if multiplies else 1] += us / 1e3 / args.steps
        x = program(*call)

    traced = sum(a + b for a, b in times.values())
    print(f"{args.model}, {args.precision}, batch {args.batch_size}, Keras on JAX as the engine "
          f"runs it ({len(forward.programs)} program(s)): {1e3 * statistics.median(walls):,.0f} "
          f"ms a forward (median of 3 untraced); traced: {traced:,.0f} ms in its compiled ops\n")
    rows = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for layer, (mult, rest) in times.items():
        kind, gflop = kinds.get(layer, (NO_LAYER, 0.0))
        row = rows[kind]
        row[0], row[1], row[2] = row[0] + mult, row[1] + rest, row[2] + gflop
    print("| layer kind | ms multiplying | GFLOP/s there | ms in other ops | share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, (mult, rest, gflop) in sorted(rows.items(), key=lambda r: -sum(r[1][:2])):
        speed = f"{1e3 * gflop / mult:.0f}" if gflop and mult else ""
        print(f"| {kind} | {mult:,.1f} | {speed} | {rest:,.1f} | {(mult + rest) / traced:.1%} |")

    by_name = collections.defaultdict(lambda: [0.0, 0.0, 0.0, ""])
    for layer, (mult, rest) in times.items():
        kind, gflop = kinds.get(layer, ("", 0.0))
        row = by_name[re.sub(r"(?<=_)\d+(?=_)", "*", layer)]
        row[0], row[1], row[2], row[3] = row[0] + mult, row[1] + rest, row[2] + gflop, kind
    print(f"\n| layer (top {args.top}) | kind | ms multiplying | GFLOP/s there | ms in other ops |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, (mult, rest, gflop, kind) in sorted(by_name.items(),
                                                  key=lambda r: -sum(r[1][:2]))[:args.top]:
        speed = f"{1e3 * gflop / mult:.0f}" if gflop and mult else ""
        print(f"| {name} | {kind} | {mult:,.1f} | {speed} | {rest:,.1f} |")


if __name__ == "__main__":
    main()
