#!/usr/bin/env bash
# The test suite: the model tests on the JAX and PyTorch backends, and everything on
# TensorFlow (the default backend). Extra arguments go to every pytest run: --runslow is the
# full suite (what CI runs); without it, the quick one.
#
# The three runs share the cores: JAX and PyTorch in the background (their output is printed
# when they end), TensorFlow in two worker processes when pytest-xdist is installed (the test
# extra), one test file per worker so that module fixtures are built once.
# SENET_TEST_WORKERS=N changes the count of TensorFlow workers; 0 runs everything one after
# the other in one process per backend, as before.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
# The quick run: XLA compiles one program per initializer shape and per layer call on JAX,
# where the tiny nets spend most of their time; unoptimised machine code compiles 3x faster
# (convolutions are library calls either way). The full run keeps XLA's defaults.
# Both runs keep JAX's compiled programs in .pytest_cache/senet-jax, so the next run on
# this checkout skips most compilation (the cache is keyed by program, flags and version).
jax_env=(JAX_COMPILATION_CACHE_DIR="$PWD/.pytest_cache/senet-jax"
         JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0)
case " $* " in
  *" --runslow "*) ;;
  *) jax_env+=(XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0}") ;;
esac
n="${SENET_TEST_WORKERS:-2}"
logs="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$logs"' EXIT

model_tests() {  # backend
  local env=(KERAS_BACKEND="$1")
  [ "$1" = jax ] && env+=("${jax_env[@]}")
  env "${env[@]}" python -m pytest -q -m backends -p no:warnings "${@:2}"
}

status=0
if [ "$n" = 0 ] || ! python -c "import xdist" 2>/dev/null; then
  for backend in jax torch; do
    echo "== KERAS_BACKEND=$backend: model tests"
    model_tests "$backend" "$@" || status=1
  done
  echo "== KERAS_BACKEND=tensorflow: all tests"
  KERAS_BACKEND=tensorflow python -m pytest -q -p no:warnings "$@" || status=1
  exit $status
fi

for backend in jax torch; do
  model_tests "$backend" "$@" > "$logs/$backend.txt" 2>&1 &
  eval "pid_$backend=$!"
done
echo "== KERAS_BACKEND=tensorflow: all tests ($n workers; JAX and PyTorch beside it)"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:warnings -n "$n" --dist loadfile "$@" || status=1
for backend in jax torch; do
  pid="pid_$backend"
  wait "${!pid}" || status=1
  echo "== KERAS_BACKEND=$backend: model tests"
  cat "$logs/$backend.txt"
done
exit $status
