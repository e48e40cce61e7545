"""Every weights-file reader fuzzed with hypothesis: a short, deterministic run inside the
test suite (about 40 s), on mutated seeds and on structured inputs from tests/weight_files.py.

The invariant (`weight_files.check_reader`): the reader returns, or raises one SenetError
whose one-line message names the file; within 5 s, and with at most a few hundred MB of
Python and numpy memory (tracemalloc). The long run is `benchmarks/fuzz_readers.py`
(coverage-guided, atheris); `SENET_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_readers.py`
scales this one up without atheris.
"""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weight_files as wf

pytestmark = pytest.mark.fuzz

# Examples per kind: the HDF5 kinds start the probe's child process each time (~0.4 s).
EXAMPLES = {"caffemodel": 200, "prototxt": 200, "torch_zip": 150, "torch_legacy": 150,
            "tf1_index": 150, "tf1_state": 80, "safetensors": 100, "senet": 60, "keras_h5": 6}
SCALE = int(os.environ.get("SENET_FUZZ_EXAMPLES", "0"))

INTERESTING = [struct.pack("<q", v) for v in (-1, 0, 2**31, 2**62, 2**63 - 1)] + [
    struct.pack("<i", v) for v in (-1, 2**31 - 1)] + [
    b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff" * 9 + b"\x01"]  # a 10-byte varint
TEXT = [b"{", b"}", b"<", b">", b"[", b"]", b":", b'"', b"'", b"\\", b"\\U", b"\\x", b"\\777",
        b"\n", b"layer", b"name", b"batch_norm_param", b"eps", b"0x", b"1e999", b"-inf",
        b"model_checkpoint_path", b"..", b"/"]


def _settings(kind_examples):
    return settings(max_examples=SCALE or kind_examples, derandomize=True, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


@st.composite
def mutated(draw, seeds):
    """A seed with 1-6 edits: bytes set, flipped, inserted, deleted, repeated or cut."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["set", "flip", "interesting", "text", "insert", "delete",
                                   "repeat", "truncate"]))
        if op == "set" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op in ("interesting", "text"):
            value = draw(st.sampled_from(INTERESTING if op == "interesting" else TEXT))
            data[pos:pos + (len(value) if draw(st.booleans()) else 0)] = value
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "repeat":
            chunk = bytes(data[pos:pos + draw(st.integers(1, 32))])
            data[pos:pos] = chunk * draw(st.integers(1, 200))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _check(kind, path, size):
    """check_reader, and the memory it took: never more than the file could justify."""
    tracemalloc.start()
    try:
        wf.check_reader(kind, path, seconds=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (256 << 20) + 32 * size, f"{peak:,} bytes for a {size:,}-byte file"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return wf.seeds(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_reader_survives_mutated_files(kind, seeds, tmp_path):
    @_settings(EXAMPLES[kind])
    @given(data=mutated(seeds[kind]))
    def run(data):
        _check(kind, wf.write_case(tmp_path / "case", kind, data), len(data))

    run()


@pytest.mark.parametrize("kind", wf.STRUCTURED)
def test_reader_survives_structured_files(kind, tmp_path):
    @_settings(150)
    @given(st.data())
    def run(data):
        content = wf.structured(kind, lambda lo, hi: data.draw(st.integers(lo, hi)))
        _check(kind, wf.write_case(tmp_path / "case", kind, content), len(content))

    run()
