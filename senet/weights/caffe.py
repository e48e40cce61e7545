"""Caffe's file formats: the binary ``.caffemodel`` (read and write) and the text ``.prototxt``.

This is the one module that knows protobuf details. The wire format is decoded by hand (no
``protobuf`` dependency): a caffemodel is a handful of small messages wrapped around big packed
float arrays, so walking the messages in Python and handing the arrays to ``np.frombuffer``
loads even SENet-154 (450 MB) in about a second.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re

import numpy as np

from senet.errors import WeightsFileError, one_line

from senet._io import atomic_write

__all__ = ["CaffeFormatError", "CaffeLayer", "V1_LAYER_TYPES", "parse_prototxt",
           "prototxt_bn_eps", "prototxt_layers", "read_caffemodel", "write_caffemodel"]


class CaffeFormatError(WeightsFileError):
    """A Caffe file that cannot be read; the message names the file and what to do."""


@dataclasses.dataclass
class CaffeLayer:
    """One layer of a caffemodel: its wiring and its parameter blobs (float32, shaped)."""

    name: str
    type: str
    bottoms: list[str] = dataclasses.field(default_factory=list)
    tops: list[str] = dataclasses.field(default_factory=list)
    blobs: list[np.ndarray] = dataclasses.field(default_factory=list)
    bn_eps: float | None = None  # batch_norm_param.eps, when the file records it


# V1LayerParameter.LayerType enum (caffe.proto), mapped to the modern type strings.
V1_LAYER_TYPES = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data",
    6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal",
    36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
_V1_TYPE_NUMBERS = {name: number for number, name in V1_LAYER_TYPES.items()}

# Field numbers (caffe.proto).
_NET_NAME, _NET_LAYERS_V1, _NET_LAYER = 1, 2, 100
_LAYER_FIELDS = {"name": 1, "type": 2, "bottom": 3, "top": 4, "blobs": 7}
_V1_FIELDS = {"name": 4, "type": 5, "bottom": 2, "top": 3, "blobs": 6}
_V1_V0_LAYER = 1
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1
_LAYER_BN_PARAM, _BN_EPS = 139, 3  # LayerParameter.batch_norm_param, BatchNormParameter.eps
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1
_MAX_AXES = 32  # Caffe's kMaxBlobAxes
_MAX_COUNT = 2**31 - 1  # Caffe counts a blob's values in an int
_MAX_DEPTH = 100  # prototxt nesting; Caffe's nets nest 4 deep
_FLOAT_TAG = (_BLOB_DATA << 3) | _WIRE_FIXED32  # 0x2D, one unpacked float of `data`

_MAGICS = [
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive (extract the .caffemodel from it first)"),
    (b"\x1f\x8b", "a gzip file (decompress it first)"),
    (b"BZh", "a bzip2 file (decompress it first)"),
    (b"\xfd7zXZ", "an xz file (decompress it first)"),
    (b"\x89HDF", "an HDF5 file (Keras weights?), not a Caffe model"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"\x80\x02", "a Python pickle"),
    (b"\x80\x03", "a Python pickle"), (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
    (b"%PDF", "a PDF document"), (b"<!DOCTYPE", "an HTML page (a failed download?)"),
    (b"<html", "an HTML page (a failed download?)"),
]


# ---------------------------------------------------------------------------------------------
# Wire format decoding
# ---------------------------------------------------------------------------------------------

class _Truncated(Exception):
    """Decoding ran past the end of the file."""


class _Malformed(Exception):
    """Bytes that no protobuf encoder writes."""


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            if end >= len(buf):
                raise _Truncated("the file ends inside a number")
            raise _Malformed("a number runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos  # protobuf keeps the low 64 bits of a 10-byte varint
        shift += 7
        if shift >= 70:
            raise _Malformed(f"a varint longer than 10 bytes at byte {pos}")


def _field(buf, pos, end):
    """Read one field at `pos`; return (number, wire type, value, new pos).

    The value is the integer for varints and the payload's (start, stop) offsets otherwise.
    """
    start = pos
    tag, pos = _varint(buf, pos, end)
    number, wire = tag >> 3, tag & 7
    if number == 0:
        raise _Malformed(f"field number 0 at byte {start}")
    if wire == _WIRE_VARINT:
        value, pos = _varint(buf, pos, end)
        return number, wire, value, pos
    if wire == _WIRE_BYTES:
        size, pos = _varint(buf, pos, end)
    elif wire == _WIRE_FIXED64:
        size = 8
    elif wire == _WIRE_FIXED32:
        size = 4
    elif wire in (3, 4):
        raise _Malformed(f"a protobuf group (wire type {wire}) at byte {start}, "
                         "which Caffe never writes")
    else:
        raise _Malformed(f"invalid wire type {wire} at byte {start}")
    stop = pos + size
    if stop > end:
        if end >= len(buf):
            raise _Truncated(f"the file ends inside a {size}-byte field that starts at byte "
                             f"{start}")
        raise _Malformed(f"a {size}-byte field at byte {start} runs past the end of its "
                         "message")
    return number, wire, (pos, stop), stop


def _expect_wire(what, wire, *allowed):
    if wire not in allowed:
        raise _Malformed(f"{what} has wire type {wire}")


def _text(buf, span, what):
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not text") from None


def _quote(name):
    """A name from the file, for a one-line message: quoted, line breaks folded, shortened."""
    text = one_line(name)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(buf, span):
    values, pos = [], span[0]
    while pos < span[1]:
        value, pos = _varint(buf, pos, span[1])
        values.append(_signed64(value))
    return values


def _unpacked_floats(buf, pos, end):
    """Decode a run of unpacked `data` floats at once; `pos` is just after the first tag.

    Unpacked floats are [4 bytes][0x2D][4 bytes][0x2D]...; reading them one field at a time
    in Python would take minutes for a big net, so find the run's length with numpy instead.
    """
    span = np.frombuffer(buf, np.uint8, count=end - pos, offset=pos)
    tags = span[4::5]
    mismatch = np.flatnonzero(tags != _FLOAT_TAG)
    count = int(mismatch[0]) + 1 if mismatch.size else len(tags) + 1
    while count and 5 * count - 1 > end - pos:  # a final tag whose float is cut off
        count -= 1
    if count == 0 or 5 * count - 1 > end - pos:
        if end >= len(buf):
            raise _Truncated("the file ends inside a float")
        raise _Malformed("a float runs past the end of its message")
    rows = np.lib.stride_tricks.as_strided(span, shape=(count, 4), strides=(5, 1))
    values = np.ascontiguousarray(rows).view("<f4").reshape(-1)
    return values, pos + 5 * count - 1


def _packed(buf, span, dtype, what):
    """A packed repeated float/double field as a view of the file's bytes (no copy)."""
    start, stop = span
    size = np.dtype(dtype).itemsize
    if (stop - start) % size:
        raise _Malformed(f"packed {what} data of {stop - start} bytes, not a multiple of {size}")
    return np.frombuffer(buf, dtype, count=(stop - start) // size, offset=start)


def _parse_blob(buf, span):
    """BlobProto -> float32 array with its shape (legacy 4-D shapes kept 4-D)."""
    pos, end = span
    data, doubles = [], []
    shape = None
    legacy = {}
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        if number == _BLOB_DATA:
            if wire == _WIRE_BYTES:
                data.append(_packed(buf, value, "<f4", "float"))
            elif wire == _WIRE_FIXED32:
                values, pos = _unpacked_floats(buf, value[0], end)
                data.append(values)
            else:
                _expect_wire("the blob's data", wire, _WIRE_BYTES, _WIRE_FIXED32)
        elif number == _BLOB_DOUBLE_DATA:
            if wire == _WIRE_BYTES:
                doubles.append(_packed(buf, value, "<f8", "double"))
            elif wire == _WIRE_FIXED64:
                doubles.append(np.frombuffer(buf, "<f8", count=1, offset=value[0]))
            else:
                _expect_wire("the blob's double data", wire, _WIRE_BYTES, _WIRE_FIXED64)
        elif number == _BLOB_SHAPE:
            _expect_wire("the blob's shape", wire, _WIRE_BYTES)
            dims = []
            spos, send = value
            while spos < send:
                snumber, swire, svalue, spos = _field(buf, spos, send)
                if snumber != _SHAPE_DIM:
                    continue
                if swire == _WIRE_BYTES:
                    dims.extend(_packed_varints(buf, svalue))
                elif swire == _WIRE_VARINT:
                    dims.append(_signed64(svalue))
                else:
                    _expect_wire("a shape dimension", swire, _WIRE_BYTES, _WIRE_VARINT)
            shape = tuple(dims)
        elif number in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH):
            _expect_wire("a legacy blob dimension", wire, _WIRE_VARINT)
            legacy[number] = _signed64(value)
    if data:
        values = np.concatenate(data) if len(data) > 1 else data[0]
    elif doubles:
        values = np.concatenate(doubles)
    else:
        values = np.zeros(0, np.float32)
    if shape is None:
        if legacy:
            shape = tuple(legacy.get(n, 0) for n in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT,
                                                      _BLOB_WIDTH))
        else:
            shape = (values.size,)
    if len(shape) > _MAX_AXES:
        raise _Malformed(f"a blob with {len(shape)} axes (Caffe allows {_MAX_AXES})")
    if any(d < 0 for d in shape):
        raise _Malformed(f"a blob with negative dimensions {shape}")
    if math.prod(d for d in shape if d) > _MAX_COUNT:  # numpy refuses such shapes even empty
        raise _Malformed(f"a blob of shape {shape}, larger than Caffe allows")
    needed = math.prod(shape)  # Python ints: no overflow, whatever the file claims
    if needed != values.size:
        raise _Malformed(f"shape {shape} needs {needed} values but the blob holds {values.size}")
    return values.astype(np.float32).reshape(shape)  # a copy: aligned, writable, native order


def _bn_eps(buf, span, default):
    """BatchNormParameter.eps, a float (fixed32) field, if present."""
    pos, end = span
    eps = default
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        if number == _BN_EPS and wire == _WIRE_FIXED32:
            eps = float(np.frombuffer(buf, "<f4", 1, value[0])[0])
    return eps


def _parse_layer(buf, span, v1):
    fields = _V1_FIELDS if v1 else _LAYER_FIELDS
    name_f, type_f, bottom_f, top_f, blobs_f = (fields[k] for k in
                                                 ("name", "type", "bottom", "top", "blobs"))
    layer = CaffeLayer(name="", type="")
    blob_spans = []
    has_v0 = False
    pos, end = span
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        if number == name_f:
            _expect_wire("the layer name", wire, _WIRE_BYTES)
            layer.name = _text(buf, value, "the layer name")
        elif number == type_f:
            if v1:
                _expect_wire("the V1 layer type", wire, _WIRE_VARINT)
                layer.type = V1_LAYER_TYPES.get(value, f"V1_{value}")
            else:
                _expect_wire("the layer type", wire, _WIRE_BYTES)
                layer.type = _text(buf, value, "the layer type")
        elif number in (bottom_f, top_f):
            _expect_wire("a layer bottom/top", wire, _WIRE_BYTES)
            (layer.bottoms if number == bottom_f else layer.tops).append(
                _text(buf, value, "a bottom/top name"))
        elif number == blobs_f:
            _expect_wire("a layer blob", wire, _WIRE_BYTES)
            blob_spans.append(value)
        elif v1 and number == _V1_V0_LAYER and wire == _WIRE_BYTES:
            has_v0 = True
        elif not v1 and number == _LAYER_BN_PARAM and wire == _WIRE_BYTES:
            layer.bn_eps = _bn_eps(buf, value, layer.bn_eps)
    for index, blob_span in enumerate(blob_spans):
        try:
            layer.blobs.append(_parse_blob(buf, blob_span))
        except _Malformed as exc:
            raise _Malformed(f"blob {index} of layer {_quote(layer.name)} ({_quote(layer.type)}): "
                             f"{exc}") from None
    return layer, has_v0


def _parse_net(buf):
    layers, has_v0 = [], False
    pos, end = 0, len(buf)
    while pos < end:
        number, wire, value, pos = _field(buf, pos, end)
        if number in (_NET_LAYER, _NET_LAYERS_V1):
            _expect_wire(f"net field {number} (a layer)", wire, _WIRE_BYTES)
            try:
                layer, v0 = _parse_layer(buf, value, v1=number == _NET_LAYERS_V1)
            except _Malformed as exc:
                raise _Malformed(f"in layer {len(layers)}: {exc}") from None
            layers.append(layer)
            has_v0 = has_v0 or v0
        elif number == _NET_NAME:
            _expect_wire("the net name", wire, _WIRE_BYTES)
    return layers, has_v0


def _looks_like_text(buf):
    head = bytes(buf[:4096])
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-4].decode("utf-8", errors="replace")
        if "\ufffd" in text:
            return False
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def read_caffemodel(path) -> list[CaffeLayer]:
    """Read a binary ``.caffemodel`` (modern ``layer`` or V1 ``layers``) into its layers.

    Every layer is returned, with or without weights, in file order; blobs are float32 numpy
    arrays (legacy num/channels/height/width blobs keep their 4-D shape).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as err:
        raise CaffeFormatError(f"{path}: cannot read the file ({err.strerror or err}).") from None
    what = "Expected a binary Caffe .caffemodel (a NetParameter with trained weights)"
    if not buf:
        raise CaffeFormatError(f"{path}: the file is empty. {what}; download or copy it again.")
    for magic, kind in _MAGICS:
        if buf.startswith(magic):
            raise CaffeFormatError(f"{path} is {kind}, not a Caffe .caffemodel. {what}.")
    text_hint = (" It looks like a text file (a .prototxt network definition?); pass the binary "
                 ".caffemodel that holds the weights." if _looks_like_text(buf) else "")
    try:
        layers, has_v0 = _parse_net(buf)
    except (_Truncated, _Malformed) as exc:
        if text_hint:
            raise CaffeFormatError(f"{path} is not a Caffe .caffemodel.{text_hint}") from None
        if isinstance(exc, _Malformed):
            raise CaffeFormatError(f"{path} is not a valid Caffe .caffemodel: {exc}. {what}.") \
                from None
        raise CaffeFormatError(f"{path} is truncated: {exc} ({len(buf)} bytes read). The "
                               "download or copy was probably cut short; fetch it again.") \
            from None
    if not any(layer.blobs for layer in layers):
        if has_v0:
            detail = (" It uses Caffe's pre-2014 V0 layer format, which is not supported; "
                      "upgrade it with Caffe's upgrade_net_proto_binary tool.")
        elif text_hint:
            detail = text_hint
        elif layers:
            detail = (f" Its {len(layers)} layers carry no blobs: it may be an untrained net "
                      "definition saved in binary form.")
        else:
            detail = f" {what}."
        raise CaffeFormatError(f"{path} holds no layers with weights.{detail}")
    return layers


# ---------------------------------------------------------------------------------------------
# Wire format encoding
# ---------------------------------------------------------------------------------------------

def _encode_varint(value):
    value = int(value)
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number, wire):
    return _encode_varint((number << 3) | wire)


def _bytes_field(number, payload):
    return b"".join((_tag(number, _WIRE_BYTES), _encode_varint(len(payload)), payload))


def _varint_field(number, value):
    return _tag(number, _WIRE_VARINT) + _encode_varint(value)


def _encode_blob(array, legacy_shapes, packed, where):
    array = np.asarray(array, dtype="<f4")
    parts = []
    if legacy_shapes:
        if array.ndim > 4:
            raise CaffeFormatError(f"{where}: a {array.ndim}-D blob does not fit the legacy "
                                   "num/channels/height/width shape; write it without "
                                   "legacy_shapes.")
        dims = (1,) * (4 - array.ndim) + array.shape
        parts += [_varint_field(number, dim) for number, dim in
                  zip((_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH), dims)]
    else:
        if packed:
            shape = _bytes_field(_SHAPE_DIM, b"".join(_encode_varint(d) for d in array.shape))
        else:
            shape = b"".join(_varint_field(_SHAPE_DIM, d) for d in array.shape)
        parts.append(_bytes_field(_BLOB_SHAPE, shape))
    flat = array.reshape(-1)
    if packed:
        parts.append(_bytes_field(_BLOB_DATA, flat.tobytes()))
    elif flat.size:
        rows = np.empty((flat.size, 5), np.uint8)
        rows[:, 0] = _FLOAT_TAG
        rows[:, 1:] = flat.view(np.uint8).reshape(-1, 4)
        parts.append(rows.tobytes())
    return b"".join(parts)


def _encode_layer(layer, v1, legacy_shapes, packed):
    fields = _V1_FIELDS if v1 else _LAYER_FIELDS
    parts = [_bytes_field(fields["name"], layer.name.encode("utf-8"))]
    if v1:
        number = _V1_TYPE_NUMBERS.get(layer.type)
        if number is None and re.fullmatch(r"V1_\d+", layer.type):
            number = int(layer.type[3:])
        if number is None:
            raise CaffeFormatError(f"layer '{layer.name}': type '{layer.type}' has no V1 enum "
                                   "value; write this net in the modern format (v1=False).")
        parts.append(_varint_field(fields["type"], number))
    else:
        parts.append(_bytes_field(fields["type"], layer.type.encode("utf-8")))
    parts += [_bytes_field(fields["bottom"], b.encode("utf-8")) for b in layer.bottoms]
    parts += [_bytes_field(fields["top"], t.encode("utf-8")) for t in layer.tops]
    eps = getattr(layer, "bn_eps", None)
    if eps is not None and not v1:
        eps_field = _tag(_BN_EPS, _WIRE_FIXED32) + np.float32(eps).astype("<f4").tobytes()
        parts.append(_bytes_field(_LAYER_BN_PARAM, eps_field))
    for index, blob in enumerate(layer.blobs):
        where = f"blob {index} of layer '{layer.name}'"
        parts.append(_bytes_field(fields["blobs"],
                                  _encode_blob(blob, legacy_shapes, packed, where)))
    return b"".join(parts)


def write_caffemodel(path, layers, name="", *, v1=False, legacy_shapes=False, packed=True):
    """Write `layers` (CaffeLayer-like objects) as a binary ``.caffemodel``, atomically.

    The default is what current Caffe writes (``layer`` entries, blob ``shape``, packed data).
    ``v1``, ``legacy_shapes`` and ``packed=False`` produce the older encodings that
    `read_caffemodel` also accepts, so those paths can be tested.
    """
    net_field = _NET_LAYERS_V1 if v1 else _NET_LAYER
    with atomic_write(path) as f:
        if name:
            f.write(_bytes_field(_NET_NAME, name.encode("utf-8")))
        for layer in layers:
            f.write(_bytes_field(net_field, _encode_layer(layer, v1, legacy_shapes, packed)))


# ---------------------------------------------------------------------------------------------
# Text format (.prototxt)
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""
      (?P<space>[ \t\r\f\v]+)
    | (?P<newline>\n)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?[fF]?)
                 (?![A-Za-z0-9_.]))
    | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_FLOAT_WORDS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


class _Token:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def describe(self):
        return "the end of the text" if self.kind == "end" else _quote(self.text)


def _tokenize(text, source):
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            snippet = text[pos:pos + 20].split("\n")[0]
            raise CaffeFormatError(f"{source}, line {line}: unexpected text {snippet!r}. Check "
                                   "the prototxt syntax on that line (unbalanced quotes?).")
        kind = match.lastgroup
        if kind == "newline":
            line += 1
        elif kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), line))
        pos = match.end()
    tokens.append(_Token("end", "", line))
    return tokens


def _unescape(literal, source, line):
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[nxt].encode("utf-8")
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group()
            out.append(int(digits, 16))
            i += 2 + len(digits)
        elif nxt in "uU":
            size = 4 if nxt == "u" else 8
            digits = body[i + 2:i + 2 + size]
            code = int(digits, 16) if re.fullmatch(r"[0-9a-fA-F]{%d}" % size, digits) else -1
            if not (0 <= code < 0xD800 or 0xE000 <= code <= 0x10FFFF):
                raise CaffeFormatError(f"{source}, line {line}: bad \\{nxt} escape "
                                       f"{_quote(body[i:i + 2 + size])} (not a Unicode character) "
                                       "in a string. Fix the string on that line.")
            out += chr(code).encode("utf-8")
            i += 2 + size
        else:
            raise CaffeFormatError(f"{source}, line {line}: unknown escape "
                                   f"{_quote(chr(92) + nxt)} in the string {_quote(literal)}.")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeFormatError(f"{source}, line {line}: the string {_quote(literal)} does not "
                               "decode as UTF-8.") from None


def _number(text, fail):
    body = text.lstrip("+-")
    if len(body) > 400:  # no Caffe value is that long, and int() refuses 4300 digits
        fail(f"a number of {len(body)} characters")
    sign = -1 if text.startswith("-") else 1
    if body[:2] in ("0x", "0X"):
        return sign * int(body, 16)
    if re.fullmatch(r"0[0-7]+", body):
        return sign * int(body, 8)
    if re.fullmatch(r"\d+", body):
        return sign * int(body)
    return sign * float(body.rstrip("fF"))


class _PrototxtParser:
    def __init__(self, tokens, source):
        self.tokens, self.source, self.i = tokens, source, 0

    def fail(self, token, message):
        raise CaffeFormatError(f"{self.source}, line {token.line}: {message}. Check the "
                               "prototxt syntax there.")

    def peek(self):
        return self.tokens[self.i]

    def take(self):
        token = self.tokens[self.i]
        self.i += 1
        return token

    def is_punct(self, token, chars):
        return token.kind == "punct" and token.text in chars

    def message(self, closer, opened_at=None, depth=0):
        if depth > _MAX_DEPTH:
            self.fail(opened_at, f"blocks nested more than {_MAX_DEPTH} deep")
        fields = {}
        while True:
            token = self.take()
            if token.kind == "end":
                if closer:
                    self.fail(token, f"missing '{closer}' for the block opened on line "
                                     f"{opened_at.line}")
                return fields
            if closer and self.is_punct(token, closer):
                return fields
            if token.kind != "ident" or token.text.startswith("-"):
                self.fail(token, f"expected a field name, found {token.describe()}")
            name = token.text
            after = self.take()
            if self.is_punct(after, ":"):
                after = self.take()
                if self.is_punct(after, "{<"):
                    values = [self.message("}" if after.text == "{" else ">", after, depth + 1)]
                elif self.is_punct(after, "["):
                    values = self.list_values(name, after, depth)
                else:
                    values = [self.scalar(name, after)]
            elif self.is_punct(after, "{<"):
                values = [self.message("}" if after.text == "{" else ">", after, depth + 1)]
            else:
                self.fail(after, f"expected ':' or '{{' after the field name {_quote(name)}, found "
                                 f"{after.describe()}")
            fields.setdefault(name, []).extend(values)
            if self.is_punct(self.peek(), ";,"):
                self.take()

    def list_values(self, name, opened, depth):
        values = []
        if self.is_punct(self.peek(), "]"):
            self.take()
            return values
        while True:
            token = self.take()
            if self.is_punct(token, "{<"):
                values.append(self.message("}" if token.text == "{" else ">", token, depth + 1))
            else:
                values.append(self.scalar(name, token))
            sep = self.take()
            if self.is_punct(sep, "]"):
                return values
            if not self.is_punct(sep, ","):
                self.fail(sep, f"expected ',' or ']' in the list for {_quote(name)} opened on line "
                               f"{opened.line}, found {sep.describe()}")

    def scalar(self, name, token):
        if token.kind == "string":
            parts = [_unescape(token.text, self.source, token.line)]
            while self.peek().kind == "string":  # adjacent literals concatenate
                nxt = self.take()
                parts.append(_unescape(nxt.text, self.source, nxt.line))
            return "".join(parts)
        if token.kind == "number":
            return _number(token.text, lambda what: self.fail(token, what))
        if token.kind == "ident":
            word = token.text
            if word in ("true", "True"):
                return True
            if word in ("false", "False"):
                return False
            sign = -1.0 if word.startswith("-") else 1.0
            if word.lstrip("-").lower() in _FLOAT_WORDS:
                return sign * _FLOAT_WORDS[word.lstrip("-").lower()]
            if word.startswith("-"):
                self.fail(token, f"{_quote(word)} is not a value for {_quote(name)}")
            return word
        self.fail(token, f"expected a value for {_quote(name)}, found {token.describe()}")


def parse_prototxt(path_or_text) -> dict:
    """Parse protobuf text format (a Caffe ``.prototxt``) into nested dicts.

    Every field maps to a list of its values, repeated or not, so callers never guess:
    ``net["layer"][0]["convolution_param"][0]["num_output"][0]``. Numbers become int/float,
    ``true``/``false`` bool, quoted strings str, enum identifiers (``MAX``) str.
    Accepts a path (str or PathLike), or the text itself (str containing a newline or a
    brace, or bytes).
    """
    if isinstance(path_or_text, bytes):
        source, raw = "prototxt text", path_or_text
    elif isinstance(path_or_text, os.PathLike) or (
            isinstance(path_or_text, str) and "\n" not in path_or_text
            and "{" not in path_or_text
            and (os.path.exists(path_or_text)
                 or path_or_text.endswith((".prototxt", ".pbtxt", ".txt")))):
        source = os.fspath(path_or_text)
        try:
            with open(source, "rb") as f:
                raw = f.read()
        except OSError as err:
            raise CaffeFormatError(f"{source}: cannot read the file ({err.strerror or err}).") \
                from None
    else:
        source, raw = "prototxt text", path_or_text
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CaffeFormatError(f"{source} is not a text file (byte {exc.start} is not "
                                   "UTF-8); a .prototxt is text. Is it a binary .caffemodel?") \
                from None
    return _PrototxtParser(_tokenize(raw, source), source).message(None)


def prototxt_layers(parsed) -> list[dict]:
    """The layer entries of a parsed net: ``layer`` (modern) or ``layers`` (V1)."""
    return list(parsed.get("layer", [])) + list(parsed.get("layers", []))


def prototxt_bn_eps(path) -> dict:
    """BatchNorm eps by layer name from a ``.prototxt`` file, every value checked.

    The prototxt is untrusted text: a layer that is not a block, a BatchNorm layer without
    a name, or an eps that is not a number is refused with the file and the layer.
    """
    source = os.fspath(path)
    parsed = parse_prototxt(pathlib.Path(source))
    eps = {}
    for index, layer in enumerate(prototxt_layers(parsed)):
        def bad(what):
            raise CaffeFormatError(f"{source}: layer {index} {what}. Fix the .prototxt, or "
                                   "convert without --prototxt.")
        if not isinstance(layer, dict):
            bad(f"is the value {_quote(str(layer))}, not a {{ ... }} block")
        params = layer.get("batch_norm_param", [])
        if not params:
            continue
        if not isinstance(params[0], dict):
            bad(f"has a batch_norm_param that is the value {_quote(str(params[0]))}, not a "
                "{ ... } block")
        values, names = params[0].get("eps", []), layer.get("name", [])
        if not values:  # `eps: []` too
            continue
        value = values[0]
        if not names or not isinstance(names[0], str):
            bad("has a BatchNorm eps but no name (name: \"...\")")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            bad(f"({_quote(names[0])}) has eps {_quote(str(value))}, not a number >= 0")
        eps[names[0]] = float(value)
    return eps
