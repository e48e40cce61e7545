#!/usr/bin/env bash
# The whole test suite: the model tests on the JAX and PyTorch backends, then everything on
# TensorFlow (the default backend). Extra arguments go to every pytest run (e.g. --runslow).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
for backend in jax torch; do
  echo "== KERAS_BACKEND=$backend: model tests"
  KERAS_BACKEND=$backend python -m pytest -q -m backends -p no:warnings "$@"
done
echo "== KERAS_BACKEND=tensorflow: all tests"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:warnings "$@"
