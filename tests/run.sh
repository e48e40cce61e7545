#!/usr/bin/env bash
# The test suite: the model tests on the JAX and PyTorch backends, and everything on
# TensorFlow (the default backend). Extra arguments go to every pytest run: --runslow is the
# full suite (what CI runs); without it, the quick one.
#
# The three runs share the cores: JAX and PyTorch in the background (their output is printed
# when they end), TensorFlow in two worker processes when pytest-xdist is installed (the test
# extra), one test file per worker so that module fixtures are built once, the costliest
# files first (COSTLIEST_FIRST in tests/conftest.py).
# SENET_TEST_WORKERS=N changes the count of TensorFlow workers; 0 runs the three one after
# the other, each in one process.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
# JAX keeps its compiled programs in .pytest_cache/senet-jax for the next run on this
# checkout (the cache is keyed by program, flags and version), and compiles them without
# LLVM's optimisation passes: most of the JAX run is compiling full-size nets that then run
# a few images. Measured alone with no cache, the full JAX model tests: 224 CPU-s with XLA's
# defaults, 161 with level 0, the same 76 tests passing (XLA_FLAGS=... to choose another).
jax_env=(JAX_COMPILATION_CACHE_DIR="$PWD/.pytest_cache/senet-jax"
         JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
         XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0}")
n="${SENET_TEST_WORKERS:-2}"
[ "$n" != 0 ] && ! python -c "import xdist" 2>/dev/null && n=0
logs="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$logs"' EXIT

model_tests() {  # backend, pytest arguments
  local env=(KERAS_BACKEND="$1")
  [ "$1" = jax ] && env+=("${jax_env[@]}")
  env "${env[@]}" python -m pytest -q -m backends -p no:warnings "${@:2}"
}

all_tests() {  # pytest arguments
  KERAS_BACKEND=tensorflow python -m pytest -q -p no:warnings "$@"
}

status=0
declare -A pid
if [ "$n" = 0 ]; then
  for backend in jax torch; do
    echo "== KERAS_BACKEND=$backend: model tests"
    model_tests "$backend" "$@" || status=1
  done
  echo "== KERAS_BACKEND=tensorflow: all tests"
  all_tests "$@" || status=1
else
  # Four processes share the cores: each computes on one thread (TensorFlow's and PyTorch's
  # intra-op pools; XLA keeps its own) rather than all of them spreading every small op
  # over every core. SENET_TEST_THREADS=0 leaves the libraries' defaults.
  if [ "${SENET_TEST_THREADS:-1}" != 0 ]; then
    export TF_NUM_INTRAOP_THREADS="${SENET_TEST_THREADS:-1}" OMP_NUM_THREADS="${SENET_TEST_THREADS:-1}"
  fi
  for backend in jax torch; do
    model_tests "$backend" "$@" > "$logs/$backend.txt" 2>&1 &
    pid[$backend]=$!
  done
  echo "== KERAS_BACKEND=tensorflow: all tests ($n workers; JAX and PyTorch beside it)"
  all_tests -n "$n" --dist loadfile --no-loadscope-reorder "$@" || status=1
  for backend in jax torch; do
    wait "${pid[$backend]}" || status=1
    echo "== KERAS_BACKEND=$backend: model tests"
    cat "$logs/$backend.txt"
  done
fi
exit $status
