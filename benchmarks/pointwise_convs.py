"""Why senet computes some 1x1 convs as matrix products: the engine's convolution against its
matrix product on the 1x1 convolutions of SE-ResNet-50 (NHWC, float32), and the two give the
same numbers.

    python benchmarks/pointwise_convs.py --backend jax|torch [--batch-size 16]
    python benchmarks/pointwise_convs.py --backend jax --bfloat16
    python benchmarks/pointwise_convs.py --backend torch --bfloat16
    python benchmarks/pointwise_convs.py --backend jax-vs-torch [--bfloat16]

jax: XLA:CPU's convolution against its dot (jitted). torch: oneDNN's convolution on the NHWC
tensor as NCHW in channels_last memory (what senet's PyTorch paths run) against
`torch.nn.functional.linear` on the NHWC tensor. jax --bfloat16: the dot of bfloat16
operands with a bfloat16 result against the same dot accumulated into float32 and rounded
once (what senet runs under a mixed bfloat16 policy). torch --bfloat16: the same two ops
in bfloat16 (what timm runs under autocast): oneDNN's bfloat16 products, the yardstick for
XLA's. jax-vs-torch: that yardstick in the same run, PyTorch's matrix product against the
one senet runs on JAX (into float32 under --bfloat16), shape by shape in one process.
Prints ms and GFLOP/s per shape (median of 10 calls after one warm-up). A call is timed
until its result is computed (JAX: `block_until_ready`), not converted to numpy: until a
later session the timing included that conversion, which for a JAX bfloat16 array is a slow
single-threaded cast (it made XLA's bfloat16 product look 2.7x slower than PyTorch's).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# (spatial size, input channels, output channels): SE-ResNet-50's 1x1 convs, stage by stage
SHAPES = [(56, 64, 256), (56, 256, 64), (28, 512, 128), (28, 128, 512), (14, 1024, 256),
          (14, 256, 1024), (7, 2048, 512), (7, 512, 2048)]


def _jax_ops(bfloat16=False):
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def dot(x, k, into=None):
        n, h, w, c = x.shape
        y = jnp.matmul(x.reshape(-1, c), k.reshape(c, -1), preferred_element_type=into)
        return y.astype(x.dtype).reshape(n, h, w, -1)

    def prepare(x, k):  # -> arguments of the first op, of the second
        dtype = jnp.bfloat16 if bfloat16 else jnp.float32
        x, k = jnp.asarray(x, dtype), jnp.asarray(k, dtype)
        return (x, k), (x, k)

    if bfloat16:
        return (jax.jit(dot), jax.jit(lambda x, k: dot(x, k, jnp.float32)), prepare,
                ("dot, bfloat16 result", "dot into float32"))
    return jax.jit(conv), jax.jit(dot), prepare, ("conv", "matmul")


def _torch_ops(bfloat16=False):
    import torch

    torch.set_grad_enabled(False)

    def conv(x, w):
        return torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w).permute(0, 2, 3, 1)

    def dot(x, w2d):
        return torch.nn.functional.linear(x, w2d)

    def prepare(x, k):
        dtype = torch.bfloat16 if bfloat16 else torch.float32
        x, k = torch.from_numpy(x).to(dtype), torch.from_numpy(k).to(dtype)
        w = k.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        return (x, w), (x, w[:, :, 0, 0].contiguous())

    return conv, dot, prepare, ("conv", "matmul")


def _jax_against_torch(bfloat16=False):
    _, torch_dot, torch_prepare, _ = _torch_ops(bfloat16)
    _, jax_dot, jax_prepare, names = _jax_ops(bfloat16)

    def prepare(x, k):
        return torch_prepare(x, k)[1], jax_prepare(x, k)[1]

    return torch_dot, jax_dot, prepare, ("PyTorch matmul", f"XLA {names[1]}")


def _done(y):
    """`y` once computed: JAX dispatches asynchronously, PyTorch on the CPU does not."""
    return y.block_until_ready() if hasattr(y, "block_until_ready") else y


def _numpy(y):
    return y.float().numpy() if hasattr(y, "float") else np.asarray(y, np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["jax", "torch", "jax-vs-torch"], required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bfloat16", action="store_true", help="bfloat16 products")
    args = p.parse_args()
    conv, dot, prepare, names = {"jax": _jax_ops, "torch": _torch_ops,
                                 "jax-vs-torch": _jax_against_torch}[args.backend](args.bfloat16)

    def timed(f, *a, n=10):
        _done(f(*a))
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            _done(f(*a))
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e3

    rng = np.random.default_rng(0)
    b = args.batch_size
    print(f"| {args.backend}{', bfloat16' if args.bfloat16 else ''}, {b} images, 1x1 | "
          f"{names[0]} ms (GFLOP/s) | {names[1]} ms "
          "(GFLOP/s) | max abs diff |")
    print("| --- | ---: | ---: | ---: |")
    total = [0.0, 0.0]
    for hw, cin, cout in SHAPES:
        x = rng.standard_normal((b, hw, hw, cin), np.float32)
        k = rng.standard_normal((1, 1, cin, cout), np.float32) * 0.05
        a_conv, a_dot = prepare(x, k)
        gflop = 2 * b * hw * hw * cin * cout / 1e9
        tc, td = timed(conv, *a_conv), timed(dot, *a_dot)
        total[0] += tc
        total[1] += td
        diff = float(np.abs(_numpy(conv(*a_conv)) - _numpy(dot(*a_dot))).max())
        print(f"| {hw}x{hw}, {cin} -> {cout} | {tc:.1f} ({gflop / tc * 1e3:.0f}) | "
              f"{td:.1f} ({gflop / td * 1e3:.0f}) | {diff:.1e} |", flush=True)
    print(f"| all eight | {total[0]:.1f} | {total[1]:.1f} | |")


if __name__ == "__main__":
    main()
