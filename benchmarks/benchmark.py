"""Inference speed of one SENet model beside timm's: `senet benchmark`, runnable from a checkout.

    python benchmarks/benchmark.py --model se_resnext50_32x4d --backend jax --batch-size 16

Same arguments and output as `senet benchmark` (see its --help); the code is `senet.bench`.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from senet.cli import main

    sys.exit(main(["benchmark", *sys.argv[1:]]))
