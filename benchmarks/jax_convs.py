"""Why a 1x1 conv is a matrix product on JAX: XLA:CPU's convolution against its dot on the
1x1 convolutions of SE-ResNet-50 (NHWC, float32), and the two give the same numbers.

    KERAS_BACKEND=jax python benchmarks/jax_convs.py [--batch-size 16]

Prints ms and GFLOP/s per shape (median of 10 calls after one compiled warm-up).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# (spatial size, input channels, output channels): SE-ResNet-50's 1x1 convs, stage by stage
SHAPES = [(56, 64, 256), (56, 256, 64), (28, 512, 128), (28, 128, 512), (14, 1024, 256),
          (14, 256, 1024), (7, 2048, 512), (7, 512, 2048)]


def main():
    import jax
    import jax.numpy as jnp
    from jax import lax

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    def timed(f, *a, n=10):
        f = jax.jit(f)
        f(*a).block_until_ready()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            f(*a).block_until_ready()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e3

    def conv(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def dot(x, k):
        n, h, w, c = x.shape
        return jnp.matmul(x.reshape(-1, c), k.reshape(c, -1)).reshape(n, h, w, -1)

    rng = np.random.default_rng(0)
    b = args.batch_size
    print(f"| {b} images, 1x1 | conv ms (GFLOP/s) | dot ms (GFLOP/s) | max abs diff |")
    print("| --- | ---: | ---: | ---: |")
    for hw, cin, cout in SHAPES:
        x = jnp.asarray(rng.standard_normal((b, hw, hw, cin), np.float32))
        k = jnp.asarray(rng.standard_normal((1, 1, cin, cout), np.float32) * 0.05)
        gflop = 2 * b * hw * hw * cin * cout / 1e9
        tc, td = timed(conv, x, k), timed(dot, x, k)
        diff = float(jnp.abs(conv(x, k) - dot(x, k)).max())
        print(f"| {hw}x{hw}, {cin} -> {cout} | {tc:.1f} ({gflop / tc * 1e3:.0f}) | "
              f"{td:.1f} ({gflop / td * 1e3:.0f}) | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
