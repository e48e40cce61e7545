"""Read TensorFlow V2-format checkpoints (``model.ckpt.index`` + ``model.ckpt.data-*``) without TF.

The original TensorFlow port of SENet published its weights as TF 1.x checkpoints written by
``tf.compat.v1.train.Saver``. This module decodes that file format with numpy alone, so that
JAX and PyTorch users can convert the weights without installing TensorFlow. It also reads
``tf.train.Checkpoint`` files, which use the same format with longer key names.

The format, in short: ``<prefix>.index`` is an SSTable (the LevelDB table format) mapping each
tensor name to a small protobuf message (``BundleEntryProto``) that says which data shard
``<prefix>.data-<i>-of-<n>`` holds the tensor's raw little-endian bytes, at which offset, how
many, and their masked CRC-32C. The entry with the empty key is the ``BundleHeaderProto``.
"""

from __future__ import annotations

import glob
import math
import os
import re
import struct

import numpy as np

from senet.errors import WeightsFileError

__all__ = ["TF1CheckpointError", "read_checkpoint"]


class TF1CheckpointError(WeightsFileError):
    """A TensorFlow checkpoint cannot be read; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), as TF and LevelDB use it. Pure Python is ~10 MB/s, far too slow for a
# 400 MB checkpoint, so large buffers are cut into 256-byte rows whose CRCs numpy computes side
# by side (one table lookup per 4 bytes of every row at once, over 1 GB/s); the row CRCs are
# then merged with the "shift by n zero bytes" linear maps, which are cached.

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_ROW = 256  # bytes per row of the vectorized CRC
_BATCH = 16384  # rows per batch: keeps the working set in cache
_SMALL = 4096  # below this many bytes the plain loop is faster than numpy's per-call overhead

_tables: dict = {}


def _crc_tables():
    """Build the byte table, the two 16-bit slicing tables and the row-shift maps once."""
    if not _tables:
        t0 = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ _POLY if c & 1 else c >> 1
            t0.append(c)
        t = [np.array(t0, np.uint32)]
        for _ in range(3):
            t.append((t[-1] >> 8) ^ t[0][t[-1] & 0xFF])
        x = np.arange(65536, dtype=np.uint32)
        _tables["byte"] = t0
        _tables["lo"] = t[3][x & 0xFF] ^ t[2][x >> 8]
        _tables["hi"] = t[1][x & 0xFF] ^ t[0][x >> 8]
        # The map "feed one zero byte" on the register, squared 8 times: feed _ROW zero bytes.
        one = np.array([t0[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)], np.uint32)
        m = _linear_map(one)
        for _ in range(_ROW.bit_length() - 1):
            m = _linear_map(_apply(m, _basis_images(m)))
        _tables["shift"] = [m]  # shift[j] feeds _ROW * 2**j zero bytes
    return _tables


def _linear_map(images):
    """Byte tables (4, 256) of the GF(2)-linear map on 32 bits whose image of bit i is images[i]."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    out = np.empty((4, 256), np.uint32)
    for k in range(4):
        out[k] = np.bitwise_xor.reduce(np.where(bits == 1, images[8 * k:8 * k + 8], 0), axis=1)
    return out


def _basis_images(m):
    """The images of the 32 single bits under the map m."""
    return np.array([m[i // 8][1 << (i % 8)] for i in range(32)], np.uint32)


def _apply(m, v):
    """Apply the linear map m to every uint32 in v."""
    v = np.asarray(v, np.uint32)
    return m[0][v & 0xFF] ^ m[1][(v >> 8) & 0xFF] ^ m[2][(v >> 16) & 0xFF] ^ m[3][v >> 24]


def _shift(j):
    """The map that feeds _ROW * 2**j zero bytes through the CRC register."""
    shifts = _crc_tables()["shift"]
    while len(shifts) <= j:
        m = shifts[-1]
        shifts.append(_linear_map(_apply(m, _basis_images(m))))
    return shifts[j]


def _crc_loop(data, crc):
    table = _crc_tables()["byte"]
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_rows(words):
    """Register values (start 0) after each row of `words` (rows, _ROW // 4) little-endian."""
    tabs = _crc_tables()
    lo_t, hi_t = tabs["lo"], tabs["hi"]
    out = []
    for start in range(0, words.shape[0], _BATCH):
        cols = np.ascontiguousarray(words[start:start + _BATCH].T)
        crc = np.zeros(cols.shape[1], np.uint32)
        lo = np.empty_like(crc)
        hi = np.empty_like(crc)
        for w in cols:
            np.bitwise_xor(crc, w, out=crc)
            np.bitwise_and(crc, 0xFFFF, out=lo)
            np.right_shift(crc, 16, out=hi)
            np.take(lo_t, lo, out=lo)
            np.take(hi_t, hi, out=hi)
            np.bitwise_xor(lo, hi, out=crc)
        out.append(crc)
    return np.concatenate(out)


def crc32c(data) -> int:
    """CRC-32C of a bytes-like object (the checksum TF and LevelDB store)."""
    data = memoryview(data).cast("B")
    n_rows = len(data) // _ROW if len(data) >= _SMALL else 0
    head = len(data) - n_rows * _ROW
    crc = _crc_loop(data[:head], 0xFFFFFFFF)
    if n_rows:
        words = np.frombuffer(data, "<u4", offset=head).reshape(n_rows, _ROW // 4)
        rows = _crc_rows(words)
        # Merge: the register after rows a, b is shift(len b)(after a) ^ after b (from 0).
        size = 1 << (n_rows - 1).bit_length()
        rows = np.concatenate([np.zeros(size - n_rows, np.uint32), rows])
        j = 0
        while len(rows) > 1:
            pairs = rows.reshape(-1, 2)
            rows = _apply(_shift(j), pairs[:, 0]) ^ pairs[:, 1]
            j += 1
        start = np.uint32(crc)
        for j in range(n_rows.bit_length()):
            if n_rows >> j & 1:
                start = _apply(_shift(j), start)
        crc = int(start ^ rows[0])
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    """Undo TF/LevelDB's CRC masking (rotate right 15, add a constant) used in stored CRCs."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Protobuf wire format: just enough to read BundleHeaderProto and BundleEntryProto.

def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos  # protobuf keeps the low 64 bits
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _signed(v):
    """int64 fields are varints of the two's complement value."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf, wires):
    """Yield (field number, value) of a protobuf message; length-delimited values as bytes.

    `wires` gives the wire type of each known field: a file that encodes one differently is
    damaged, and is refused here rather than handing bytes where the caller expects a number.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value = bytes(buf[pos:pos + size])
            pos += size
        elif wire == 5:
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        if wires.get(number, wire) != wire:
            raise ValueError(f"field {number} has wire type {wire}, not {wires[number]}")
        yield number, value


def _parse_header(buf):
    header = {"num_shards": 0, "endianness": 0}
    for number, value in _fields(buf, {1: 0, 2: 0, 3: 2}):
        if number == 1:
            header["num_shards"] = _signed(value)
        elif number == 2:
            header["endianness"] = value
    return header


def _parse_shape(buf):
    dims, unknown_rank = [], False
    for number, value in _fields(buf, {2: 2, 3: 0}):
        if number == 2:
            size = 0
            for n, v in _fields(value, {1: 0, 2: 2}):
                if n == 1:
                    size = _signed(v)
            dims.append(size)
        elif number == 3:
            unknown_rank = bool(value)
    return None if unknown_rank else tuple(dims)


def _parse_entry(buf):
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None,
             "sliced": False}
    for number, value in _fields(buf, {1: 0, 2: 2, 3: 0, 4: 0, 5: 0, 6: 5, 7: 2}):
        if number == 1:
            entry["dtype"] = value
        elif number == 2:
            entry["shape"] = _parse_shape(value)
        elif number == 3:
            entry["shard_id"] = _signed(value)
        elif number == 4:
            entry["offset"] = _signed(value)
        elif number == 5:
            entry["size"] = _signed(value)
        elif number == 6:
            entry["crc32c"] = value
        elif number == 7:
            entry["sliced"] = True
    return entry


# ---------------------------------------------------------------------------------------------
# SSTable (LevelDB table format) as TF writes the .index file.

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5  # compression type byte + masked CRC-32C of contents and type


def _is_sstable(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < _FOOTER:
                return False
            f.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", f.read(8))[0] == _TABLE_MAGIC
    except OSError:
        return False


def _read_block(index, path, handle):
    """Contents of the block at `handle` (offset, size), checked against its trailer."""
    offset, size = handle
    if offset < 0 or size < 0 or offset + size + _TRAILER > len(index):
        raise TF1CheckpointError(
            f"{path}: the index points past its own end (block at {offset}+{size}, file has "
            f"{len(index)} bytes); the file is truncated or damaged. Copy it again from its "
            "source.")
    block = index[offset:offset + size]
    kind = index[offset + size]
    stored = int.from_bytes(index[offset + size + 1:offset + size + _TRAILER], "little")
    if crc32c(index[offset:offset + size + 1]) != _unmask(stored):
        raise TF1CheckpointError(
            f"{path}: a block of the index fails its CRC-32C check; the file is damaged. "
            "Copy it again from its source.")
    if kind == 1:
        raise TF1CheckpointError(
            f"{path}: the index uses Snappy compression, which TensorFlow never writes for "
            "checkpoints and this reader does not support. Load the checkpoint in TensorFlow "
            "and save it again with tf.compat.v1.train.Saver or tf.train.Checkpoint.")
    if kind != 0:
        raise TF1CheckpointError(
            f"{path}: an index block has unknown compression type {kind}; the file is damaged "
            "or not a TensorFlow checkpoint index.")
    return block


def _block_entries(block, key_bytes):
    """Yield (key, value) of a table block: prefix-compressed entries, then restart offsets.

    `key_bytes` is a one-item list, the key bytes the caller still allows: each key repeats
    a prefix of the one before, so a few bytes per entry could otherwise describe gigabytes.
    """
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (num_restarts + 1)
    if end < 0:
        raise ValueError("bad restart count")
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise ValueError("entry runs past the block")
        key_bytes[0] -= shared + unshared
        if key_bytes[0] < 0:
            raise ValueError("its keys are longer than any checkpoint's")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _table_entries(path):
    """All (key, value) pairs of the SSTable at `path`, in key order."""
    try:
        with open(path, "rb") as f:
            index = memoryview(f.read())
    except OSError as err:
        raise TF1CheckpointError(f"{path}: cannot read the file ({err.strerror or err}).") \
            from None
    if len(index) < _FOOTER or struct.unpack_from("<Q", index, len(index) - 8)[0] != _TABLE_MAGIC:
        what = "is empty" if not len(index) else (
            f"is too short ({len(index)} bytes)" if len(index) < _FOOTER
            else "does not end with the SSTable magic number")
        raise TF1CheckpointError(
            f"{path}: this file {what}, so it is not a TensorFlow checkpoint index. Pass the "
            "checkpoint prefix (e.g. .../model.ckpt) or its .index file, and copy the file "
            "again if it was cut short.")
    try:
        footer = index[len(index) - _FOOTER:]
        _, pos = _varint(footer, 0)
        _, pos = _varint(footer, pos)  # metaindex handle: nothing TF needs is there
        idx_off, pos = _varint(footer, pos)
        idx_size, pos = _varint(footer, pos)
        entries, end, key_bytes = [], 0, [16 * len(index) + (1 << 20)]
        for _, handle in _block_entries(_read_block(index, path, (idx_off, idx_size)),
                                        key_bytes):
            off, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            if off < end:  # as written, data blocks follow each other: each is read once
                raise ValueError("its data blocks overlap")
            end = off + size + _TRAILER
            entries.extend(_block_entries(_read_block(index, path, (off, size)), key_bytes))
    except ValueError as e:
        if isinstance(e, TF1CheckpointError):
            raise
        raise TF1CheckpointError(
            f"{path}: the index is damaged ({e}). Copy it again from its source.") from None
    return entries


# ---------------------------------------------------------------------------------------------
# Tensors.

# DataType enum -> numpy dtype (little-endian as stored). bfloat16 is widened to float32.
_DTYPES = {1: "f4", 2: "f8", 3: "i4", 4: "u1", 5: "i2", 6: "i1", 8: "c8", 9: "i8", 10: "?",
           14: "bfloat16", 17: "u2", 18: "c16", 19: "f2", 22: "u4", 23: "u8"}
_MAX_DIMS = 32  # numpy 1.x's limit; checkpoints of conv nets have at most 4
_SKIPPED = {7: "string", 20: "resource", 21: "variant"}  # not numeric: nothing to convert
_DTYPE_NAMES = {11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16",
                24: "float8_e5m2", 25: "float8_e4m3fn", 29: "int4", 30: "uint4"}


def _resolve_prefix(path):
    """Turn any accepted spelling of a checkpoint into its prefix, or explain what is wrong."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _prefix_in_directory(path)
    m = re.fullmatch(r"(.*)\.data-\d{5}-of-\d{5}", path)
    if m:
        prefix = m.group(1)
    elif path.endswith(".index"):
        prefix = path[:-len(".index")]
    elif path.endswith(".meta"):
        prefix = path[:-len(".meta")]
    else:
        prefix = path
    if os.path.isfile(prefix + ".index"):
        return prefix
    v1 = [p for p in [prefix] + sorted(glob.glob(glob.escape(prefix) + "-?????-of-?????"))
          if os.path.isfile(p) and _is_sstable(p)]
    if v1:
        raise TF1CheckpointError(
            f"{v1[0]}: this is a checkpoint in TensorFlow's old V1 format (one file, no "
            ".index), which this reader does not support. Load it with TensorFlow "
            "(tf.compat.v1.train.Saver().restore) and save it again with "
            "tf.compat.v1.train.Saver() (V2 is the default), then pass the new prefix.")
    if os.path.isfile(prefix) and not path.endswith((".index", ".meta")) and not m:
        raise TF1CheckpointError(
            f"{prefix}: this file is not a TensorFlow checkpoint and {prefix}.index does not "
            "exist. Pass the checkpoint prefix (e.g. .../model.ckpt), its .index file, or the "
            "directory that holds them.")
    data = glob.glob(glob.escape(prefix) + ".data-?????-of-?????")
    hint = ("the .data files are there but the index is not; copy the .index file as well"
            if data else "check the path; pass the checkpoint prefix (e.g. .../model.ckpt), "
            "its .index file, or the directory that holds them")
    raise TF1CheckpointError(f"{prefix}.index: checkpoint index file not found; {hint}.")


_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b"f": b"\f",
            b"v": b"\v"}


def _unescape(text: bytes) -> bytes:
    """Undo protobuf text-format C escapes (the state file writes non-ASCII as octal)."""
    def one(m):
        e = m.group(1)
        if e[:1] in b"01234567":
            return bytes([int(e, 8) & 0xFF])
        if e[:1] == b"x" and len(e) > 1:  # a lone \x stays an x
            return bytes([int(e[1:], 16)])
        return _ESCAPES.get(e, e)
    return re.sub(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", one, text, flags=re.S)


def _short(text):
    """A name from the file, for a one-line message: quoted, line breaks folded, shortened."""
    text = " ".join(str(text).split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _prefix_in_directory(directory):
    """Use the directory's `checkpoint` state file, else its single .index file."""
    state = os.path.join(directory, "checkpoint")
    if os.path.isfile(state):
        try:
            with open(state, "rb") as f:
                text = f.read()
        except OSError as err:
            raise TF1CheckpointError(f"{state}: cannot read the file ({err.strerror or err}).") \
                from None
        # [ \t], not \s: \s spans lines, and re.M would then retry it from every line.
        m = re.search(rb'^[ \t]*model_checkpoint_path[ \t]*:[ \t]*"((?:[^"\\\n]|\\.)*)"', text,
                      re.M)
        if m:
            name = os.fsdecode(_unescape(m.group(1)))
            prefix = name if os.path.isabs(name) else os.path.join(directory, name)
            if "\0" not in name and not os.path.isfile(prefix + ".index") \
                    and not os.path.isfile(prefix):
                # The directory was moved after saving: the state file keeps the old path.
                moved = os.path.join(directory, os.path.basename(name))
                if os.path.isfile(moved + ".index") or os.path.isfile(moved):
                    prefix = moved
            if not name or "\0" in name or os.path.isdir(prefix):
                # Following it could lead back here: refuse rather than recurse.
                raise TF1CheckpointError(
                    f"{state}: its model_checkpoint_path {_short(name)} does not name a "
                    "checkpoint prefix; the state file is damaged. Pass the checkpoint prefix "
                    "(e.g. .../model.ckpt) instead of the directory.")
            if not glob.glob(glob.escape(prefix) + "*"):  # say so with the name cut short
                raise TF1CheckpointError(
                    f"{state}: it names the checkpoint {_short(name)}, whose files are not "
                    f"there. Copy the checkpoint's .index and .data files into {directory}, "
                    "or pass their prefix (e.g. .../model.ckpt).")
            try:
                return _resolve_prefix(prefix)
            except TF1CheckpointError as err:  # say which file named that checkpoint
                raise TF1CheckpointError(f"{state} names the checkpoint {_short(name)}, which "
                                         f"cannot be used: {err}") from None
    indexes = sorted(glob.glob(os.path.join(glob.escape(directory), "*.index")))
    if len(indexes) == 1:
        return indexes[0][:-len(".index")]
    if not indexes:
        raise TF1CheckpointError(
            f"{directory}: this directory holds no checkpoint (no `checkpoint` state file and "
            "no .index file). Pass the checkpoint prefix (e.g. .../model.ckpt) instead.")
    names = ", ".join(os.path.basename(p) for p in indexes)
    raise TF1CheckpointError(
        f"{directory}: this directory holds several checkpoints ({names}) and no `checkpoint` "
        "state file names one. Pass the prefix of the one you want (e.g. .../model.ckpt-1000).")


def _decode(raw, dtype, shape):
    if dtype == "bfloat16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    arr = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def read_checkpoint(path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every numeric tensor of a TensorFlow V2-format checkpoint, by name, as numpy arrays.

    `path` may be the prefix (``.../model.ckpt``), its ``.index``, ``.meta`` or a ``.data-*``
    file, or a directory (its ``checkpoint`` state file's latest checkpoint, else its only
    ``.index``). String, resource and variant tensors are skipped; bfloat16 becomes float32.
    With `verify` (the default, about 1 GB/s) each tensor's bytes are checked against the
    CRC-32C that TF stored, so a damaged download is caught here rather than as bad accuracy;
    sizes and file lengths are always checked.
    """
    prefix = _resolve_prefix(path)
    index_path = prefix + ".index"
    entries = _table_entries(index_path)
    if not entries or entries[0][0] != b"":
        raise TF1CheckpointError(
            f"{index_path}: this SSTable has no checkpoint header, so it is not a TensorFlow "
            "V2 checkpoint index. Pass the .index file of a checkpoint saved by "
            "tf.compat.v1.train.Saver or tf.train.Checkpoint.")
    try:
        header = _parse_header(entries[0][1])
    except ValueError as e:
        raise TF1CheckpointError(
            f"{index_path}: the checkpoint header is damaged ({e}). Copy the file again.") from None
    num_shards = header["num_shards"]
    if header["endianness"] != 0:
        raise TF1CheckpointError(
            f"{index_path}: the checkpoint was written on a big-endian machine, which this "
            "reader does not support. Load and save it again with TensorFlow on a "
            "little-endian machine (x86 or ARM).")
    if num_shards < 1:
        raise TF1CheckpointError(
            f"{index_path}: the checkpoint header says it has {num_shards} data shards; the "
            "index is damaged. Copy it again from its source.")

    files: dict = {}
    unread: dict = {}  # per shard: bytes not yet read; TF stores each tensor once
    out: dict[str, np.ndarray] = {}
    try:
        for key, value in entries[1:]:
            name = key.decode("utf-8", "replace")
            quoted = _short(name)
            try:
                entry = _parse_entry(value)
            except ValueError as e:
                raise TF1CheckpointError(
                    f"{index_path}: the entry of tensor {quoted} is damaged ({e}). Copy the "
                    "file again from its source.") from None
            code = entry["dtype"]
            if code in _SKIPPED:
                continue
            if entry["sliced"]:
                raise TF1CheckpointError(
                    f"{index_path}: tensor {quoted} is saved in slices (a partitioned "
                    "variable), which this reader does not support. Load the checkpoint in "
                    "TensorFlow and save it again without partitioning.")
            if code not in _DTYPES:
                kind = _DTYPE_NAMES.get(code, f"DataType enum {code}")
                raise TF1CheckpointError(
                    f"{index_path}: tensor {quoted} has dtype {kind}, which this reader does "
                    "not support. Load the checkpoint in TensorFlow, cast it to float32 and "
                    "save it again.")
            shape = entry["shape"]
            itemsize = 2 if _DTYPES[code] == "bfloat16" else np.dtype(_DTYPES[code]).itemsize
            if shape is None or len(shape) > _MAX_DIMS or any(d < 0 for d in shape) or \
                    math.prod(shape) * itemsize != entry["size"] or \
                    math.prod(d for d in shape if d) * itemsize >= 2**63:  # numpy's limit
                raise TF1CheckpointError(
                    f"{index_path}: tensor {quoted} has shape {_short(shape)} but "
                    f"{entry['size']} bytes; the index is damaged. Copy it again from its "
                    "source.")
            shard = entry["shard_id"]
            data_path = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            if not 0 <= shard < num_shards:
                raise TF1CheckpointError(
                    f"{index_path}: tensor {quoted} is in shard {shard} of {num_shards}; the "
                    "index is damaged. Copy it again from its source.")
            if shard not in files:
                if not os.path.isfile(data_path):
                    raise TF1CheckpointError(
                        f"{data_path}: checkpoint data file not found. A checkpoint is the "
                        f".index file plus all {num_shards} .data-*-of-{num_shards:05d} "
                        "files; copy the missing one next to the .index file.")
                try:
                    files[shard] = open(data_path, "rb")
                except OSError as err:
                    raise TF1CheckpointError(f"{data_path}: cannot read the file "
                                             f"({err.strerror or err}).") from None
                unread[shard] = os.fstat(files[shard].fileno()).st_size
            f = files[shard]
            offset, size = entry["offset"], entry["size"]
            length = os.fstat(f.fileno()).st_size
            if offset < 0 or offset + size > length:
                raise TF1CheckpointError(
                    f"{data_path}: tensor {quoted} lies at bytes {offset}..{offset + size} "
                    f"but the file has only {length} bytes; the data file is truncated. Copy "
                    "it again from its source.")
            unread[shard] -= size
            if unread[shard] < 0:
                raise TF1CheckpointError(
                    f"{index_path}: its tensors claim more bytes than {data_path} holds (they "
                    "overlap); the index is damaged or crafted. Copy it again from its source.")
            raw = bytearray(size)
            f.seek(offset)
            if f.readinto(raw) != size:
                raise TF1CheckpointError(
                    f"{data_path}: could not read tensor {quoted} (the file shrank while "
                    "reading). Copy it again from its source.")
            if verify and entry["crc32c"] is not None and crc32c(raw) != _unmask(entry["crc32c"]):
                raise TF1CheckpointError(
                    f"{data_path}: tensor {quoted} fails its CRC-32C check; the checkpoint "
                    "is damaged. Copy it again from its source.")
            out[name] = _decode(raw, _DTYPES[code], shape)
    finally:
        for f in files.values():
            f.close()
    return out
