"""Hostile weights files: each crash class that fuzzing found, made by tests/weight_files.py,
must end in one SenetError that names the file, in one line, quickly, without a huge
allocation: from the readers, and from `senet convert` (exit code 1, nothing written).

Before the fixes these raised OverflowError, KeyError, AttributeError, TypeError,
NotImplementedError, UnicodeDecodeError, OSError, RecursionError, ValueError, tried to
allocate terabytes, ran for minutes (quadratic regexes) or hung in the HDF5 library.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time

import numpy as np
import pytest

import weight_files as wf
from cli_runner import one_line_error
from cli_runner import run as senet_cli
from cli_runner import run_subprocess
import senet
import senet.errors
from senet.weights import native

T = wf.Tensor


def _caffe_many_axes(tmp):
    return wf.caffe_blob_with_dims(b"".join(wf.pb_field(1, 0, 1) for _ in range(70)),
                                   np.ones(1, "<f4").tobytes())


def _zip(**patch):
    data = wf.torch_zip(*wf.torch_seed())
    return wf.patch_zip(data, "archive/data.pkl", **patch)


def _torch(fmt, tensor, storage=np.ones(4, "f4"), key="w"):
    return getattr(wf, f"torch_{fmt}")({key: tensor}, {"w": storage})


def _tf1_entry(entry: bytes):
    return wf.sstable([(b"", wf.pb_field(1, 0, 1)), (b"w", entry)])


def _footer(index_block_at, index_block):
    handle = wf.varint(index_block_at) + wf.varint(len(index_block) - 5)
    return (handle + handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)


def _tf1_overlapping_blocks(tmp):
    """An index that names one data block of 3,000 entries 3,000 times: 9 million entries
    from 100 kB."""
    header = wf._with_trailer(wf._table_block([(b"", wf.pb_field(1, 0, 1))]))
    strings = wf._with_trailer(wf._table_block([(b"s%05d" % i, wf.pb_field(1, 0, 7))
                                                for i in range(3000)]))  # DT_STRING: skipped
    handles = [wf.varint(0) + wf.varint(len(header) - 5)]
    handles += [wf.varint(len(header)) + wf.varint(len(strings) - 5)] * 3000
    index_block = wf._with_trailer(wf._table_block([(b"k%05d" % i, h)
                                                    for i, h in enumerate(handles)]))
    return header + strings + index_block + _footer(len(header) + len(strings), index_block)


def _tf1_key_bomb(tmp):
    """Each key repeats all of the one before and adds a byte: 100,000 entries describe
    5 GB of keys in 600 kB."""
    body = bytearray(wf.varint(0) + wf.varint(0) + wf.varint(2) + wf.pb_field(1, 0, 1))
    for i in range(100_000):
        body += wf.varint(i) + wf.varint(1) + wf.varint(0) + b"k"  # shares all i bytes so far
    block = wf._with_trailer(bytes(body) + struct.pack("<II", 0, 1))
    handle = wf.varint(0) + wf.varint(len(block) - 5)
    index_block = wf._with_trailer(wf._table_block([(b"\xff", handle)]))
    return block + index_block + _footer(len(block), index_block)


def _tf1_overlapping_tensors(tmp):
    """5,000 tensors on the same 4 MB of the data file: 20 GB of arrays from 4 MB."""
    from senet.weights.tf1_checkpoint import crc32c

    data = bytes(4 << 20)
    crc, n = wf._mask(crc32c(data)), len(data) // 4
    return wf.sstable([(b"", wf.pb_field(1, 0, 1))] + [
        (b"t%05d" % i, wf.tf1_entry((n,), 0, 4 * n, crc)) for i in range(5000)]), data


def _senet_header(doc_text: bytes):
    def make(tmp):
        data = open(wf.senet_weights(os.path.join(tmp, "s.weights.h5")), "rb").read()
        head = native.MAGIC + struct.pack("<I", len(doc_text)) + doc_text
        return head + data[len(head):] if len(head) <= 512 else head + data[512:]
    return make


# (kind, the file's bytes from a temporary directory, a fragment of the expected message)
CASES = {
    # Caffe
    "caffe: blob dimension as a 10-byte varint (OverflowError)": (
        "caffemodel", lambda tmp: wf.caffe_blob_with_dims(b"\x08" + b"\xff" * 9 + b"\x7f"),
        "negative dimensions"),
    "caffe: blob dimensions whose product overflows int64": (
        "caffemodel", lambda tmp: wf.caffe_blob_with_dims(
            wf.pb_field(1, 0, 2**32) + wf.pb_field(1, 0, 2**32)), "larger than Caffe allows"),
    "caffe: 70 axes (numpy allows 64: ValueError)": ("caffemodel", _caffe_many_axes, "70 axes"),
    "caffe: an empty blob whose other dimensions overflow (ValueError)": (
        "caffemodel", lambda tmp: wf.caffe_blob_with_dims(
            b"".join(wf.pb_field(1, 0, d) for d in (0, 2**31 - 1, 2**31 - 1, 2**31 - 1))),
        "larger than Caffe allows"),
    "prototxt: \\U escape beyond Unicode (OverflowError)": (
        "prototxt", lambda tmp: b'layer { name: "\\UFFFFFFFF" }\n', "not a Unicode character"),
    "prototxt: \\u escape of a surrogate (UnicodeEncodeError)": (
        "prototxt", lambda tmp: b'layer { name: "\\uD800" }\n', "not a Unicode character"),
    "prototxt: an escaped carriage return (a two-line message; found by the long run)": (
        "prototxt", lambda tmp: b'layer { name: "a\\\rb" }\n', "unknown escape"),
    "prototxt: BatchNorm layer without a name (KeyError)": (
        "prototxt", lambda tmp: b"layer { type: 'BatchNorm' batch_norm_param { eps: 1e-3 } }\n",
        "no name"),
    "prototxt: a scalar where a layer is expected (AttributeError)": (
        "prototxt", lambda tmp: b"layer: 5\n", "not a { ... } block"),
    "prototxt: a scalar batch_norm_param (TypeError)": (
        "prototxt", lambda tmp: b"layer { name: 'bn' batch_norm_param: 'eps' }\n",
        "not a { ... } block"),
    "prototxt: eps that is not a number (ValueError)": (
        "prototxt", lambda tmp: b"layer { name: 'bn' batch_norm_param { eps: 'x' } }\n",
        "not a number"),
    "prototxt: 5,000 nested blocks (RecursionError)": (
        "prototxt", lambda tmp: b"a {" * 5000, "nested more than 100 deep"),
    "prototxt: a 5,000-digit integer (int() refuses it: ValueError)": (
        "prototxt", lambda tmp: b"x: " + b"7" * 5000 + b"\n", "a number of 5000 characters"),
    "prototxt: 200,000 digits then a letter (quadratic tokenizer: minutes)": (
        "prototxt", lambda tmp: b"x: " + b"1" * 200_000 + b"a\n", "unexpected text"),
    # PyTorch
    "torch zip: compression method 99 (NotImplementedError)": (
        "torch_zip", lambda tmp: _zip(method=99), "zip method 99"),
    "torch zip: version 9.9 needed (NotImplementedError)": (
        "torch_zip", lambda tmp: _zip(version=99), "zip file version 9.9"),
    "torch zip: encrypted member (RuntimeError)": (
        "torch_zip", lambda tmp: _zip(flags=0x1), "encrypted"),
    "torch zip: patch data flag (NotImplementedError)": (
        "torch_zip", lambda tmp: _zip(flags=0x20), "flag bit 5"),
    "torch zip: member name not UTF-8 (UnicodeDecodeError)": (
        "torch_zip", lambda tmp: _zip(flags=0x800, name=b"archive/data.pk\xff"), "utf-8"),
    "torch zip: central directory past its place (OSError from a negative seek)": (
        "torch_zip", lambda tmp: wf.shift_zip_directory(wf.torch_zip(*wf.torch_seed()), 4096),
        "Invalid argument"),
    "torch zip: a tensor of 2**70 elements (OverflowError)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (2**35, 2**35), (0, 0))), "would take"),
    "torch zip: a stride-0 tensor of 10**12 elements (3.6 TiB)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (10**12,), (0,))), "would take"),
    "torch zip: an empty tensor with a 2**70 dimension (ValueError)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (0, 2**70), (1, 1))), "invalid size"),
    "torch zip: an empty tensor whose other dimensions overflow (ValueError)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (0, 2**22, 2**22, 2**22), (1,) * 4)),
        "would take"),
    "torch zip: a 5,000-digit dimension (ValueError from str() in the message)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (10**5000,), (1,))), "invalid size"),
    "torch zip: 70 dimensions (numpy allows 64: ValueError)": (
        "torch_zip", lambda tmp: _torch("zip", T("w", (1,) * 70, (1,) * 70)), "70 dimensions"),
    "torch zip: a 5,000-digit integer key (ValueError from str())": (
        "torch_zip", lambda tmp: wf.torch_zip({10**5000: wf.contiguous("w", (4,))},
                                              {"w": np.ones(4, "f4")}), "not a string"),
    "torch legacy: a global with a 2,000-character name (a page-long message)": (
        "torch_legacy", lambda tmp: wf.pickle_bytes(wf.LEGACY_MAGIC) + wf.pickle_bytes(1001)
        + wf.pickle_bytes({}) + b"\x80\x02c" + b"m" * 2000 + b"\nname\n.", "Python global"),
    "torch legacy: a stride-0 tensor of 2.5e9 elements (9.3 GiB allocated)": (
        "torch_legacy", lambda tmp: _torch("legacy", T("w", (2_500_000_000,), (0,))),
        "would take"),
    # TF1
    "tf1: the shape as a varint (TypeError)": (
        "tf1_index", lambda tmp: _tf1_entry(wf.pb_field(1, 0, 1) + wf.pb_field(2, 0, 7)),
        "field 2 has wire type 0"),
    "tf1: the dtype as bytes": (
        "tf1_index", lambda tmp: _tf1_entry(wf.pb_field(1, 2, b"\x01")), "wire type 2"),
    "tf1: the header's shard count as bytes (TypeError)": (
        "tf1_index", lambda tmp: wf.sstable([(b"", wf.pb_field(1, 2, b"xx"))]),
        "header is damaged"),
    "tf1: dimensions whose product overflows int64 (ValueError)": (
        "tf1_index", lambda tmp: _tf1_entry(wf.tf1_entry((2**32, 2**32), 0, 0, wf._mask(0))),
        "has shape"),
    "tf1: an empty tensor whose other dimensions overflow (ValueError)": (
        "tf1_index", lambda tmp: _tf1_entry(wf.tf1_entry((0, 2**62, 2**62), 0, 0, wf._mask(0))),
        "has shape"),
    "tf1: one data block named 3,000 times (9 million entries)": (
        "tf1_index", _tf1_overlapping_blocks, "overlap"),
    "tf1: keys that share ever longer prefixes (5 GB of keys)": (
        "tf1_index", _tf1_key_bomb, "keys are longer"),
    "tf1: 5,000 tensors on the same bytes (20 GB)": (
        "tf1_index", _tf1_overlapping_tensors, "overlap"),
    "tf1: state file naming a 1,400-character path (a page-long message)": (
        "tf1_state", lambda tmp: b'model_checkpoint_path: "' + b"a {" * 470 + b'"\n',
        "whose files are not there"),
    "tf1: state file with \\x and no hex digit (ValueError; found by the long fuzzing run)": (
        "tf1_state", lambda tmp: b'model_checkpoint_path: "a\\xz"\n', "whose files are not there"),
    "tf1: state file naming an absolute path elsewhere (the message named only that path)": (
        "tf1_state", lambda tmp: b'model_checkpoint_path: "/de"\n', "names the checkpoint '/de'"),
    "tf1: state file with an empty path (RecursionError)": (
        "tf1_state", lambda tmp: b'model_checkpoint_path: ""\n', "does not name a checkpoint"),
    "tf1: state file that names its own directory (RecursionError)": (
        "tf1_state", lambda tmp: b'model_checkpoint_path: "."\n', "does not name a checkpoint"),
    # senet weights files: the header is read before anything else
    "senet: header that is not JSON (printed without the file name)": (
        "senet", _senet_header(b"{not json"), "not valid JSON"),
    "senet: header JSON nested 100,000 deep (RecursionError)": (
        "senet", _senet_header(b"[" * 100_000), "not valid JSON"),
    "senet: header version that is a string (TypeError)": (
        "senet", _senet_header(b'{"format": "senet-weights", "version": "9", "meta": {}, '
                               b'"userblock": 512, "body_sha256": ""}'), "lacks the format"),
}
SLOW = {"prototxt: 200,000 digits then a letter (quadratic tokenizer: minutes)": 2.0}


@pytest.mark.parametrize("case", list(CASES))
def test_crash_class_is_refused_in_one_line(case, tmp_path):
    kind, make, fragment = CASES[case]
    path = wf.write_case(tmp_path / "case", kind, make(tmp_path))
    start = time.monotonic()
    result = wf.check_reader(kind, path, seconds=10)
    assert isinstance(result, Exception), f"read without complaint: {result!r:.200}"
    if fragment:
        assert fragment in str(result), str(result)
    assert time.monotonic() - start < SLOW.get(case, 1.0), "took too long"


def test_the_state_file_regex_is_linear(tmp_path):
    """1 MB of blank lines before the path: the old `^\\s*` pattern took ~20 minutes."""
    state = b"\n" * 1_000_000 + b'model_checkpoint_path: "model.ckpt"\n'
    path = wf.write_case(tmp_path / "case", "tf1_state", state)
    start = time.monotonic()
    assert sorted(wf.check_reader("tf1_state", path)) == sorted(wf.tf1_seed())
    assert time.monotonic() - start < 2


def _length_bomb(opcode):
    wide = opcode in (b"\x8d", b"\x8e", b"\x96", b"\x95")  # 8-byte lengths
    return b"\x80\x04" + opcode + (1 << 28).to_bytes(8 if wide else 4, "little") + b"abc."


BOMBS = {"BINUNICODE": _length_bomb(b"X"), "BINBYTES": _length_bomb(b"B"),
         "BINUNICODE8": _length_bomb(b"\x8d"), "BINBYTES8": _length_bomb(b"\x8e"),
         "BYTEARRAY8": _length_bomb(b"\x96"), "FRAME": _length_bomb(b"\x95"),
         # the memo table grows to the index a PUT names (found by the long fuzzing run)
         "LONG_BINPUT": b"\x80\x02N" + b"r" + (1 << 26).to_bytes(4, "little") + b"."}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("opcode", list(BOMBS))
def test_pickle_lengths_are_checked_before_allocating(tmp_path, fmt, opcode):
    """A string or bytes opcode that declares 256 MB in a tiny file: pickle allocated the
    declared length before finding the data short; a memo index of 2**26, 512 MB."""
    import tracemalloc
    import zipfile

    bomb = BOMBS[opcode]
    if fmt == "zip":
        path = tmp_path / "bomb.pth"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", bomb)
    else:
        path = tmp_path / "bomb.pth"
        path.write_bytes(wf.pickle_bytes(wf.LEGACY_MAGIC) + wf.pickle_bytes(1001)
                         + wf.pickle_bytes({}) + bomb)
    tracemalloc.start()
    try:
        result = wf.check_reader("torch_" + fmt, os.fspath(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "truncated or damaged" in str(result)
    assert peak < 16 << 20, f"{peak:,} bytes"


def test_no_decompressor_is_tried_on_an_unknown_file(tmp_path):
    """An xz (LZMA-alone) header that asks for a 4 GB dictionary: tarfile.is_tarfile, once
    used to recognise old torch files, tried it, which is a MemoryError under a memory limit
    (found by the long fuzzing run). Read in a child process limited to 1 GB more."""
    import subprocess
    import sys

    path = tmp_path / "model.pth"
    path.write_bytes(b"\x5d" + b"\xff" * 12 + bytes(500))
    code = """if True:
        import resource, sys
        from senet.weights.torch_format import read_state_dict
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30),) * 2)
        try:
            read_state_dict(sys.argv[1])
        except Exception as e:
            print(type(e).__name__, e)
    """
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.startswith("TorchFormatError") and "not a PyTorch checkpoint" in r.stdout, \
        r.stdout + r.stderr


def test_any_stride_on_a_dimension_of_one(tmp_path):
    """It is never used, so it may be any int64 (numpy's as_strided overflowed on 2**62)."""
    data = _torch("zip", T("w", (1, 4), (2**62, 1)))
    path = wf.write_case(tmp_path, "torch_zip", data)
    np.testing.assert_array_equal(wf.check_reader("torch_zip", path)["w"], np.ones((1, 4)))


def test_stride_zero_views_of_sound_files_still_read(tmp_path):
    """The memory budget leaves room for what torch really writes: a small expand() view."""
    data = _torch("zip", T("w", (3, 4), (1, 0)), np.arange(3, dtype="f4"))
    path = wf.write_case(tmp_path, "torch_zip", data)
    np.testing.assert_array_equal(wf.check_reader("torch_zip", path)["w"],
                                  np.repeat(np.arange(3, dtype="f4")[:, None], 4, axis=1))


# --------------------------------------------------------------------------- the seeds are real


def test_seeds_are_what_the_frameworks_write_and_read(tmp_path):
    """The hand-made files are genuine: torch, TensorFlow and safetensors read them too."""
    torch = pytest.importorskip("torch")
    tensors, storages = wf.torch_seed()
    ours = {}
    for fmt in ("zip", "legacy"):
        path = tmp_path / f"seed-{fmt}.pth"
        path.write_bytes(getattr(wf, f"torch_{fmt}")(tensors, storages))
        theirs = torch.load(path, weights_only=True)
        ours[fmt] = wf.check_reader("torch_zip", os.fspath(path))
        assert list(theirs) == list(ours[fmt]) == list(tensors)
        for name, t in theirs.items():
            np.testing.assert_array_equal(ours[fmt][name], t.numpy())
    assert ours["zip"]["expanded"].strides[1] != 0  # a fresh array, not a view

    tf = pytest.importorskip("tensorflow")
    prefix = wf.write_tf1(tmp_path / "tf1", *wf.tf1_checkpoint(wf.tf1_seed()))
    reader = tf.train.load_checkpoint(prefix)
    for name, value in wf.tf1_seed().items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)

    from safetensors.numpy import load_file

    path = tmp_path / "seed.safetensors"
    path.write_bytes(wf.safetensors_bytes(wf.tf1_seed()))
    for name, value in load_file(path).items():
        np.testing.assert_array_equal(value, wf.tf1_seed()[name])


# --------------------------------------------------------------------------- HDF5


@pytest.fixture
def quick_probe(monkeypatch):
    """A short probe limit, yet one a loaded machine (tests/run.sh runs four test processes on
    two cores) meets on a sound or crashing file."""
    monkeypatch.setattr(native, "PROBE_SECONDS", 4.0)


def _keras_file(tmp_path, how=None):
    path = wf.keras_h5(tmp_path / "keras.weights.h5")
    if how:
        with open(path, "rb") as f:
            data = wf.hdf5_btree_loop(f.read(), how)
        with open(path, "wb") as f:
            f.write(data)
    return path


def test_the_crafted_hdf5_really_hangs_the_library(tmp_path):
    """Guards the tests below: in a process of its own, h5py never finishes this file."""
    import subprocess
    import sys

    path = _keras_file(tmp_path, "sibling")
    code = ("import h5py, sys; f = h5py.File(sys.argv[1], 'r'); print('opened', flush=True); "
            "f.visit(print)")
    with pytest.raises(subprocess.TimeoutExpired) as info:
        subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=5)
    assert info.value.output.startswith(b"opened")  # it hangs in the walk, not before


def test_keras_file_that_hangs_hdf5_is_refused_in_time(tmp_path, quick_probe):
    import senet

    path = _keras_file(tmp_path, "sibling")
    start = time.monotonic()
    with pytest.raises(senet.errors.WeightsFileError) as info:
        senet.create_model("se_resnet18", weights=path)
    assert time.monotonic() - start < 10
    message = wf.check_message(info.value, path)
    assert "did not finish reading this file in 4 s" in message


def test_keras_file_that_crashes_hdf5_is_refused(tmp_path, quick_probe):
    path = _keras_file(tmp_path, "child")
    result = wf.check_reader("keras_h5", path)
    assert "the HDF5 library crashed on it, signal" in str(result)


def test_the_same_damage_in_a_senet_file_never_reaches_hdf5(tmp_path, quick_probe):
    """The checksum is checked before h5py parses anything: refused at once, whereas the
    HDF5 part of the file on its own hangs the library (the probe times out on it)."""
    path = wf.senet_weights(tmp_path / "model.weights.h5")
    with open(path, "rb") as f:
        data = wf.hdf5_btree_loop(f.read(), "sibling")
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(native.WeightsFileError, match="did not finish"):
        native.probe(path)
    start = time.monotonic()
    result = wf.check_reader("senet", path, seconds=5)
    assert "do not match the checksum" in str(result)
    assert time.monotonic() - start < 1


def _signed(path, build):
    """A senet weights file whose layer group is filled by `build(group)`, then given a
    valid header and checksum: what a crafted file can do, unlike a damaged one."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        build(f.create_group("conv"))
    header = native._header_bytes({"model": "se_resnet18", "input": "caffe", "classes": 0},
                                  native._sha256_from(path, 512), 512)
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\0"))
    return os.fspath(path)


@pytest.mark.parametrize("how", ["external storage", "huge declared size", "external link"])
def test_datasets_that_reach_outside_the_file_are_refused(tmp_path, quick_probe, how):
    """Data kept in another file (/dev/zero, /dev/stdin) or declared bigger than the file
    is refused before a byte is read: in senet files, and in Keras files by the probe."""
    import h5py

    def build(g):
        if how == "external storage":
            g.create_dataset("0", shape=(1 << 20,), dtype="f4",
                             external=[("/dev/zero", 0, 4 << 20)])
        elif how == "huge declared size":
            g.create_dataset("0", shape=(1 << 40,), dtype="f4", chunks=(1024,))
        else:
            g["0"] = h5py.ExternalLink(os.fspath(tmp_path / "elsewhere.h5"), "/x")

    with h5py.File(tmp_path / "elsewhere.h5", "w") as f:
        f["x"] = np.zeros(3, "f4")
    senet_file = _signed(tmp_path / "senet.weights.h5", build)
    keras_file = tmp_path / "keras.weights.h5"
    with h5py.File(keras_file, "w") as f:
        build(f.create_group("layers/conv/vars"))
    for kind, path in (("senet", senet_file), ("keras_h5", os.fspath(keras_file))):
        result = wf.check_reader(kind, path, seconds=30)
        assert isinstance(result, Exception), kind
        assert "outside the file" in str(result) or "more bytes than the file" in str(result) \
            or "link to another file" in str(result) or "not a dataset" in str(result), result


# --------------------------------------------------------------------------- senet convert

CONVERT_CASES = [c for c in CASES if CASES[c][0] != "prototxt"]


def _convert_source(tmp_path, case):
    kind, make, _ = CASES[case]
    path = wf.write_case(tmp_path / "in", kind, make(tmp_path))
    return os.path.dirname(path) if kind.startswith("tf1") else path


@pytest.mark.parametrize("case", CONVERT_CASES)
def test_convert_refuses_in_one_line_and_writes_nothing(case, tmp_path):
    src = _convert_source(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    with wf.time_limit(20):
        result = senet_cli("convert", src, "--model", "se_resnet18", "-o", out / "x.weights.h5")
    one_line_error(result, "convert", src)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] == "prototxt"])
def test_convert_refuses_a_hostile_prototxt(case, tmp_path):
    model = tmp_path / "net.caffemodel"
    model.write_bytes(wf.caffemodel(tmp_path))
    _, make, fragment = CASES[case]
    proto = tmp_path / "net.prototxt"
    proto.write_bytes(make(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    with wf.time_limit(20):
        result = senet_cli("convert", model, "--prototxt", proto, "--model", "se_resnet18",
                           "-o", out / "x.weights.h5")
    one_line_error(result, "convert", os.fspath(proto), fragment)
    assert list(out.iterdir()) == []


def test_convert_refuses_a_keras_file_that_hangs_hdf5(tmp_path, quick_probe):
    path = _keras_file(tmp_path, "sibling")
    out = tmp_path / "out"
    out.mkdir()
    start = time.monotonic()
    result = senet_cli("convert", path, "--model", "se_resnet18", "-o", out / "x.weights.h5")
    one_line_error(result, "convert", path, "did not finish")
    assert time.monotonic() - start < 10 and list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["torch zip: a tensor of 2**70 elements (OverflowError)",
                                  "tf1: state file with an empty path (RecursionError)"])
def test_convert_refuses_in_a_real_process(case, tmp_path):
    src = _convert_source(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    result = run_subprocess("convert", src, "--model", "se_resnet18", "-o",
                            out / "x.weights.h5", timeout=120)
    one_line_error(result, "convert", src)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- crafted metadata

PHOTO = os.path.join(os.path.dirname(native.__file__), "..", "data", "chelsea.jpg")


@pytest.mark.parametrize("field, value", [("preprocessing", 5), ("classes", "3"),
                                          ("preprocessing", {"size": "224"}), ("source", [])])
def test_crafted_metadata_is_refused_in_one_line(tmp_path, field, value):
    """A checksum proves a file undamaged, not who wrote it: a header with a number where a
    dict belongs made `senet predict` fail with AttributeError."""
    meta = {"model": "se_resnet18", "input": "caffe", "classes": 3, field: value}
    path = tmp_path / "crafted.weights.h5"
    native.save(path, {"conv": [np.ones(2, "f4")]}, meta)
    with pytest.raises(native.WeightsFileError, match=f"metadata field '{field}"):
        native.read_header(path)
    result = senet_cli("predict", PHOTO, "--model", "se_resnet18", "--weights", path)
    one_line_error(result, "predict", os.fspath(path), "metadata field")


def test_predict_refuses_a_keras_file_that_hangs_hdf5(tmp_path, quick_probe):
    path = _keras_file(tmp_path, "sibling")
    start = time.monotonic()
    result = senet_cli("predict", PHOTO, "--model", "se_resnet18", "--weights", path)
    one_line_error(result, "predict", path, "did not finish reading this file in 4 s")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("how", ["sibling", "child"])
def test_a_crafted_senet_file_with_a_valid_checksum_never_reaches_hdf5_here(tmp_path,
                                                                             quick_probe, how):
    """A checksum proves a file undamaged, not who wrote it: the B-tree loop that hangs
    ("sibling") or crashes ("child") the HDF5 library, signed with a valid header, reaches
    HDF5 only in the probe's child process; here, one line, in time."""
    path = wf.senet_weights(tmp_path / "crafted.weights.h5")
    doc = native.read_header(path)
    with open(path, "rb") as f:
        data = wf.hdf5_btree_loop(f.read(), how)
    ub = doc["userblock"]
    body_sha = hashlib.sha256(data[ub:]).hexdigest()
    header = native._header_bytes(doc["meta"], body_sha, ub)
    with open(path, "wb") as f:
        f.write(header.ljust(ub, b"\0") + data[ub:])
    assert native.read(path, checksum_only=True)[1] == doc["meta"]  # the checksum holds
    start = time.monotonic()
    with pytest.raises(senet.errors.WeightsFileError) as info:
        senet.create_model(doc["meta"]["model"], weights=path, include_top=False)
    assert time.monotonic() - start < 15
    message = wf.check_message(info.value, path)
    assert "did not finish" in message or "crashed" in message
