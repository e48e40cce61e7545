"""Small weights files of every supported format, valid (fuzzing seeds) and hostile (one per
crash class that fuzzing found), made here byte by byte: no binary blob is shipped, no
framework is needed, and every number a reader must distrust can be set by hand.

Used by tests/test_untrusted_files.py, tests/test_fuzz_readers.py and
benchmarks/fuzz_readers.py. `READERS` says how each kind of file is read; `check_reader`
is the invariant: a reader returns, or raises one SenetError that names the file in one
line, within a time limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import zipfile
from typing import NamedTuple

import numpy as np

from senet.errors import SenetError

# --------------------------------------------------------------------------- pickles, by hand


class Global(NamedTuple):
    module: str
    name: str


class Call(NamedTuple):
    fn: object
    args: tuple


class Persistent(NamedTuple):
    pid: tuple


def _emit(x, out: bytearray):
    """Protocol-2 opcodes for x: the few kinds of value a state dict holds."""
    if isinstance(x, Global):
        out += b"c" + f"{x.module}\n{x.name}\n".encode()
    elif isinstance(x, Call):
        _emit(x.fn, out)
        _emit(tuple(x.args), out)
        out += b"R"
    elif isinstance(x, Persistent):
        _emit(tuple(x.pid), out)
        out += b"Q"
    elif x is None or isinstance(x, bool):
        out += {None: b"N", True: b"\x88", False: b"\x89"}[x]
    elif isinstance(x, int):
        if 0 <= x < 256:
            out += b"K" + bytes([x])
        elif -2**31 <= x < 2**31:
            out += b"J" + struct.pack("<i", x)
        else:  # LONG1 or LONG4: any size, e.g. 2**70 or 10**5000
            raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
            out += (b"\x8a" + bytes([len(raw)]) if len(raw) < 256
                    else b"\x8b" + struct.pack("<I", len(raw))) + raw
    elif isinstance(x, str):
        raw = x.encode("utf-8", "surrogatepass")
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(x, tuple):
        out += b"("
        for item in x:
            _emit(item, out)
        out += b"t"
    elif isinstance(x, list):
        out += b"]("
        for item in x:
            _emit(item, out)
        out += b"e"
    elif isinstance(x, dict):
        out += b"}("
        for key, value in x.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    else:
        raise TypeError(f"cannot emit {type(x).__name__}")


def pickle_bytes(x) -> bytes:
    out = bytearray(b"\x80\x02")
    _emit(x, out)
    return bytes(out + b".")


# --------------------------------------------------------------------------- PyTorch files

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_ORDERED_DICT = Global("collections", "OrderedDict")


class Tensor(NamedTuple):
    """A tensor as torch.save describes it: a view (shape, stride, offset) of storage `key`."""

    key: str
    shape: tuple
    stride: tuple
    offset: int = 0


def contiguous(key, shape, offset=0):
    strides, step = [], 1
    for n in reversed(shape):
        strides.insert(0, step)
        step *= n
    return Tensor(key, tuple(shape), tuple(strides), offset)


def _state_pickle(tensors: dict, numels: dict, legacy: bool) -> bytes:
    state = {}
    for name, t in tensors.items():
        pid = ("storage", Global("torch", "FloatStorage"), t.key, "cpu", numels[t.key])
        pid += (None,) if legacy else ()
        state[name] = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                           (Persistent(pid), t.offset, tuple(t.shape), tuple(t.stride), False,
                            Call(_ORDERED_DICT, ())))
    return pickle_bytes(state)


def torch_zip(tensors: dict, storages: dict, *, numels=None) -> bytes:
    """A torch.save zip archive: `tensors` {name: Tensor}, `storages` {key: float32 array}.

    `numels` overrides the element counts the pickle claims.
    """
    numels = {k: len(v) for k, v in storages.items()} | (numels or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", _state_pickle(tensors, numels, legacy=False))
        z.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", np.asarray(data, "<f4").tobytes())
        z.writestr("archive/version", b"3\n")
    return buf.getvalue()


def torch_legacy(tensors: dict, storages: dict, *, numels=None) -> bytes:
    """The legacy stream of pickles (torch < 1.6, and the 2018 SENet files)."""
    numels = {k: len(v) for k, v in storages.items()} | (numels or {})
    parts = [pickle_bytes(LEGACY_MAGIC), pickle_bytes(1001),
             pickle_bytes({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}),
             _state_pickle(tensors, numels, legacy=True), pickle_bytes(list(storages))]
    for key, data in storages.items():
        parts.append(struct.pack("<Q", numels[key] % 2**64) + np.asarray(data, "<f4").tobytes())
    return b"".join(parts)


def torch_seed() -> tuple[dict, dict]:
    """A small state dict: a conv, a shared storage, a transposed and a stride-0 view."""
    rng = np.random.default_rng(0)
    storages = {"0": rng.standard_normal(54).astype("f4"), "1": np.arange(12, dtype="f4")}
    tensors = {"conv.weight": contiguous("0", (2, 3, 3, 3)),
               "conv.bias": contiguous("1", (2,)),
               "fc.weight": Tensor("1", (3, 2), (1, 3), 2),  # transposed, offset
               "expanded": Tensor("1", (4, 3), (0, 1), 5)}  # stride 0
    return tensors, storages


def _zip_records(data: bytes):
    """Offsets of (local header, central directory entry) of each member."""
    central = [m for m in range(len(data) - 4) if data[m:m + 4] == b"PK\x01\x02"]
    for c in central:
        yield struct.unpack_from("<I", data, c + 42)[0], c


def patch_zip(data: bytes, member: str, *, method=None, flags=None, version=None,
              name: bytes | None = None) -> bytes:
    """`data` with one member's compression method, flag bits, version needed or raw name
    changed, in its local header and its central directory entry alike."""
    out = bytearray(data)
    for local, central in _zip_records(data):
        n = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46:central + 46 + n] != member.encode():
            continue
        for base, off in ((local, 4), (central, 6)):  # version needed, flags, method
            if version is not None:
                struct.pack_into("<H", out, base + off, version)
            if flags is not None:
                struct.pack_into("<H", out, base + off + 2, flags)
            if method is not None:
                struct.pack_into("<H", out, base + off + 4, method)
        if name is not None:
            assert len(name) == n, "keep the name's length"
            out[local + 30:local + 30 + n] = name
            out[central + 46:central + 46 + n] = name
        return bytes(out)
    raise KeyError(member)


def shift_zip_directory(data: bytes, by: int) -> bytes:
    """Claim the central directory starts `by` bytes later: zipfile then seeks to negative
    member offsets (a plain OSError)."""
    out = bytearray(data)
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", out, end + 16, struct.unpack_from("<I", data, end + 16)[0] + by)
    return bytes(out)


# --------------------------------------------------------------------------- protobuf, Caffe

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def pb_field(number: int, wire: int, payload) -> bytes:
    """One protobuf field: payload is an int (varint), or bytes (length-delimited or fixed)."""
    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(payload)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload


def caffe_seed_layers():
    from senet.weights.caffe import CaffeLayer

    rng = np.random.default_rng(0)
    return [
        CaffeLayer("conv1", "Convolution", ["data"], ["conv1"],
                   [rng.standard_normal((2, 3, 3, 3)).astype("f4")]),
        CaffeLayer("conv1/bn", "BatchNorm", ["conv1"], ["conv1"],
                   [np.ones(2, "f4"), np.ones(2, "f4"), np.ones(1, "f4")], bn_eps=1e-3),
        CaffeLayer("fc", "InnerProduct", ["conv1"], ["fc"],
                   [rng.standard_normal((3, 2)).astype("f4"), np.zeros(3, "f4")]),
    ]


def caffemodel(tmp_path, **kwargs) -> bytes:
    """The seed layers as write_caffemodel writes them (kwargs: v1, legacy_shapes, packed)."""
    from senet.weights.caffe import write_caffemodel

    path = os.path.join(tmp_path, "seed.caffemodel")
    write_caffemodel(path, caffe_seed_layers(), "seed", **kwargs)
    with open(path, "rb") as f:
        return f.read()


def caffe_blob_with_dims(dims_payload: bytes, data=b"") -> bytes:
    """A net with one layer whose one blob has the given BlobShape payload."""
    blob = pb_field(7, 2, dims_payload) + pb_field(5, 2, data)
    layer = pb_field(1, 2, b"conv") + pb_field(2, 2, b"Convolution") + pb_field(7, 2, blob)
    return pb_field(100, 2, layer)


PROTOTXT_SEED = """name: "seed"
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 stride: 1 pad: 0x1 }
}
layer {
  name: "conv1/bn"
  type: "BatchNorm"
  bottom: "conv1"
  top: "conv1"
  batch_norm_param { use_global_stats: true eps: 1e-3 }
}
layers < name: 'old\\tstyle' type: RELU blobs_lr: [1, 2.5f, -inf] >
"""

# --------------------------------------------------------------------------- TF1 checkpoints


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _table_block(entries) -> bytes:
    """A LevelDB table block: entries without prefix sharing, one restart point."""
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)


def _with_trailer(block: bytes) -> bytes:
    from senet.weights.tf1_checkpoint import crc32c

    return block + b"\0" + struct.pack("<I", _mask(crc32c(block + b"\0")))


def sstable(entries) -> bytes:
    """An SSTable as TF writes the .index: one data block, a metaindex, an index, a footer."""
    data = _with_trailer(_table_block(entries))
    meta = _with_trailer(_table_block([]))
    meta_handle = varint(len(data)) + varint(len(meta) - 5)
    index = _with_trailer(_table_block([(entries[-1][0], varint(0) + varint(len(data) - 5))]))
    index_handle = varint(len(data) + len(meta)) + varint(len(index) - 5)
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return data + meta + index + footer


def tf1_entry(shape, offset, size, crc, dtype=1) -> bytes:
    dims = b"".join(pb_field(2, 2, pb_field(1, 0, d)) for d in shape)
    return (pb_field(1, 0, dtype) + pb_field(2, 2, dims) + pb_field(4, 0, offset)
            + pb_field(5, 0, size) + pb_field(6, 5, struct.pack("<I", crc)))


def tf1_checkpoint(tensors: dict, header=None) -> tuple[bytes, bytes]:
    """(index, data) of a one-shard V2 checkpoint of float32 `tensors` {name: array}."""
    from senet.weights.tf1_checkpoint import crc32c

    header = pb_field(1, 0, 1) + pb_field(3, 2, pb_field(1, 0, 1)) if header is None else header
    entries, data = [(b"", header)], bytearray()
    for name in sorted(tensors):
        raw = np.asarray(tensors[name], "<f4").tobytes()
        entries.append((name.encode(), tf1_entry(np.shape(tensors[name]), len(data), len(raw),
                                                  _mask(crc32c(raw)))))
        data += raw
    return sstable(entries), bytes(data)


def tf1_seed() -> dict:
    rng = np.random.default_rng(0)
    return {"conv1/kernel": rng.standard_normal((3, 3, 3, 2)).astype("f4"),
            "conv1/bn/gamma": np.ones(2, "f4"), "dense/bias": np.zeros(3, "f4")}


def write_tf1(directory, index: bytes, data: bytes, state: bytes | None = None) -> str:
    """Write model.ckpt.index/.data-00000-of-00001 (and a `checkpoint` state file)."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, "model.ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    if state is not None:
        with open(os.path.join(directory, "checkpoint"), "wb") as f:
            f.write(state)
    elif os.path.exists(os.path.join(directory, "checkpoint")):  # from an earlier case
        os.remove(os.path.join(directory, "checkpoint"))
    return prefix


# --------------------------------------------------------------------------- safetensors, HDF5

def safetensors_bytes(tensors: dict) -> bytes:
    header, data = {"__metadata__": {"format": "np"}}, bytearray()
    for name, a in tensors.items():
        raw = np.asarray(a, "<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(a)),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def keras_h5(path) -> str:
    """An HDF5 file laid out as Keras 3's save_weights (plain h5py, no senet header)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "3.0.0"
        for layer, shapes in (("conv", [(3, 3, 3, 2), (2,)]), ("dense", [(2, 3), (3,)])):
            g = f.create_group(f"layers/{layer}/vars")
            for i, shape in enumerate(shapes):
                g.create_dataset(str(i), data=np.full(shape, 0.5, "f4"))
    return os.fspath(path)


def senet_weights(path) -> str:
    """A senet weights file (user block with a JSON header and the sha256 of the body)."""
    from senet.weights import native

    native.save(path, {"conv": [np.ones((3, 3, 3, 2), "f4"), np.zeros(2, "f4")],
                       "classifier": [np.ones((2, 3), "f4"), np.zeros(3, "f4")]},
                {"model": "se_resnet18", "input": "caffe", "classes": 3,
                 "class_names": ["a", "b", "c"]})
    return os.fspath(path)


def hdf5_root_btree(data: bytes) -> tuple[int, int]:
    """(base, address) of the root group's v1 B-tree node, as h5py writes by default
    (superblock version 0): addresses count from the base, after any user block."""
    base = next(b for b in [0] + [512 << i for i in range(16)]
                if data[b:b + 8] == b"\x89HDF\r\n\x1a\n")
    assert data[base + 8] == 0 and data[base + 13] == 8, "superblock v0 with 8-byte offsets"
    address = struct.unpack_from("<Q", data, base + 80)[0]  # the root entry's scratch pad
    assert data[base + address:base + address + 4] == b"TREE"
    return base, address


def hdf5_btree_loop(data: bytes, how="sibling") -> bytes:
    """Point the root group's B-tree node at itself: as its right sibling (the HDF5 library
    then walks siblings forever, in C) or as its child (endless recursion: a crash)."""
    out = bytearray(data)
    base, address = hdf5_root_btree(data)
    node = base + address
    if how == "sibling":
        struct.pack_into("<Q", out, node + 16, address)
    else:
        out[node + 5] = 1  # level 1: the children are nodes too
        struct.pack_into("<Q", out, node + 32, address)
    return bytes(out)


# --------------------------------------------------------------------------- reading, checking

def _read_caffe(path):
    from senet.weights.caffe import read_caffemodel
    return read_caffemodel(path)


def _read_prototxt(path):
    from senet.weights.caffe import prototxt_bn_eps
    return prototxt_bn_eps(path)


def _read_torch(path):
    from senet.weights.torch_format import read_state_dict
    return read_state_dict(path)


def _read_tf1(path):
    from senet.weights.tf1_checkpoint import read_checkpoint
    return read_checkpoint(os.path.dirname(path))  # through the state file when present


def _read_safetensors(path):
    from senet.weights.sources import read_safetensors
    return read_safetensors(path)


def _read_native(path):
    from senet.weights.sources import read_native
    return read_native(path)


class Kind(NamedTuple):
    file: str  # the name the mutated bytes are written under
    read: object


READERS = {
    "caffemodel": Kind("net.caffemodel", _read_caffe),
    "prototxt": Kind("net.prototxt", _read_prototxt),
    "torch_zip": Kind("model.pth", _read_torch),
    "torch_legacy": Kind("model.pth", _read_torch),
    "tf1_index": Kind("model.ckpt.index", _read_tf1),
    "tf1_state": Kind("checkpoint", _read_tf1),
    "safetensors": Kind("model.safetensors", _read_safetensors),
    "senet": Kind("model.weights.h5", _read_native),
    "keras_h5": Kind("model.weights.h5", _read_native),
}


def seeds(tmp_path) -> dict:
    """{kind: [seed bytes]}: small valid files of every kind (the TF1 kinds' other file,
    the data shard, is written by `write_case`)."""
    tensors, storages = torch_seed()
    index, _ = tf1_checkpoint(tf1_seed())
    out = {
        "caffemodel": [caffemodel(tmp_path), caffemodel(tmp_path, legacy_shapes=True,
                                                        packed=False)],
        "prototxt": [PROTOTXT_SEED.encode()],
        "torch_zip": [torch_zip(tensors, storages)],
        "torch_legacy": [torch_legacy(tensors, storages)],
        "tf1_index": [index],
        "tf1_state": [b'model_checkpoint_path: "model.ckpt"\n'
                      b'all_model_checkpoint_paths: "model.ckpt"\n'],
        "safetensors": [safetensors_bytes(tf1_seed())],
    }
    for kind, write in (("senet", senet_weights), ("keras_h5", keras_h5)):
        path = os.path.join(tmp_path, f"seed-{kind}.h5")
        with open(write(path), "rb") as f:
            out[kind] = [f.read()]
    return out


def write_case(directory, kind: str, data: bytes) -> str:
    """Write `data` as a file of `kind` in `directory` (with what else it needs); its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, READERS[kind].file)
    if kind.startswith("tf1"):  # data: the index or state file, or (index, data shard)
        index, shard = tf1_checkpoint(tf1_seed())
        if isinstance(data, tuple):
            data, shard = data
        write_tf1(directory, data if kind == "tf1_index" else index, shard,
                  data if kind == "tf1_state" else None)
        return path
    with open(path, "wb") as f:
        f.write(data)
    return path


class TooSlow(Exception):
    """A reader ran past its time limit."""


def _alarm(signum, frame):
    raise TooSlow()


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TooSlow in the block after `seconds` (Python code; a loop in C is the HDF5
    probe's to stop, in its own process)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_message(err, where):
    """A refusal for people: names `where`, one line, not a page."""
    message = str(err)
    assert isinstance(err, SenetError), f"{type(err).__name__}: {message}"
    assert os.fspath(where) in message, f"the message does not name {where}: {message}"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert len(message) < 1000 + len(os.fspath(where)), f"a {len(message)}-character message"
    return message


def check_reader(kind: str, path, seconds: float = 10.0):
    """Read `path` as `kind`; return what the reader returned, or the SenetError it raised.

    Anything else fails: another exception propagates, a message that does not name the
    file or spans lines raises AssertionError, and a reader still running after `seconds`
    raises TooSlow.
    """
    with time_limit(seconds):
        try:
            return READERS[kind].read(path)
        except SenetError as err:
            check_message(err, os.path.dirname(path) if kind.startswith("tf1") else path)
            return err


# --------------------------------------------------------------------------- structured inputs

# Numbers that break readers: the edges of every integer width a format uses.
EXTREMES = (0, 1, 2, 3, 7, 255, 256, 2**31 - 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**63,
            2**64 - 1, 2**64, 2**70, 10**12)


def _number(draw):
    """An integer from `draw(lo, hi)`: small, or one of EXTREMES."""
    if draw(0, 1):
        return draw(0, 16)
    return EXTREMES[draw(0, len(EXTREMES) - 1)]


def structured(kind: str, draw) -> bytes:
    """A file of `kind` whose sizes, shapes, offsets and wire types come from
    `draw(lo, hi) -> int` (hypothesis or atheris): the numbers byte mutation rarely reaches."""
    if kind in ("torch_zip", "torch_legacy"):
        ndim = draw(0, 4) if draw(0, 7) else draw(0, 70)
        tensor = Tensor("0", tuple(_number(draw) for _ in range(ndim)),
                        tuple(_number(draw) for _ in range(ndim)), _number(draw))
        storage = np.arange(draw(0, 64), dtype="f4")
        write = torch_zip if kind == "torch_zip" else torch_legacy
        return write({"w": tensor}, {"0": storage}, numels={"0": _number(draw)}
                     if draw(0, 3) == 0 else None)
    if kind == "caffemodel":
        dims = b"".join(pb_field(1, 0, _number(draw)) for _ in range(draw(0, 6)))
        if draw(0, 3) == 0:
            dims = pb_field(1, 2, b"".join(varint(_number(draw)) for _ in range(draw(0, 70))))
        return caffe_blob_with_dims(dims, np.ones(draw(0, 16), "<f4").tobytes())
    if kind == "tf1_index":
        entry = b""
        for number, wire in ((1, 0), (2, 2), (4, 0), (5, 0), (6, 5)):  # dtype shape offset..
            wire = wire if draw(0, 7) else (0, 1, 2, 5)[draw(0, 3)]
            if wire == 0:
                entry += pb_field(number, 0, _number(draw))
            elif wire == 2:  # a shape of dims, whatever the field
                entry += pb_field(number, 2, b"".join(pb_field(2, 2, pb_field(1, 0, _number(draw)))
                                                      for _ in range(draw(0, 6))))
            else:
                entry += pb_field(number, wire, bytes(8 if wire == 1 else 4))
        header = pb_field(1, 0, _number(draw)) if draw(0, 3) else pb_field(1, 2, b"x")
        return sstable([(b"", header), (b"w", entry)])
    raise KeyError(kind)


STRUCTURED = ("torch_zip", "torch_legacy", "caffemodel", "tf1_index")
