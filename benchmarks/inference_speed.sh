#!/usr/bin/env bash
# The README's inference speed table: every engine, precision and Keras backend beside timm,
# and OpenVINO / ONNX Runtime on timm's own ONNX export, in one run per model.
#   benchmarks/inference_speed.sh [OUT_DIR]     (default benchmarks/results)
# Needs pip install -e ".[test]" (timm, OpenVINO, ONNX Runtime). 22 to 40 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
mkdir -p "$out"
common=(--batch-size 1,16 --precisions float32,bfloat16 --engine all --backend all)
senet benchmark --model se_resnet50 "${common[@]}" --plot "$out/speed_se_resnet50.png" | tee "$out/speed_se_resnet50.txt"
senet benchmark --model se_resnext50_32x4d "${common[@]}" --plot "$out/speed_se_resnext50_32x4d.png" | tee "$out/speed_se_resnext50_32x4d.txt"
senet benchmark --model senet154 "${common[@]}" --warmup 2 --iters 5 --plot "$out/speed_senet154.png" | tee "$out/speed_senet154.txt"
