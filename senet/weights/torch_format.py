"""Read a PyTorch checkpoint (a state dict saved by `torch.save`) into numpy arrays.

Published SENet weights exist only as PyTorch files. This module reads them without
importing torch (it need not be installed) and without running anything from the file:
`torch.load` unpickles arbitrary code, so here the pickle is read by an unpickler that knows
only the handful of names a state dict uses, each mapped to our own inert stand-in.

Supported: the zip format (the default since torch 1.6) and the legacy stream of pickles
(`_use_new_zipfile_serialization=False`, and the 2018 files converted from Caffe).
Recognised but refused with a clear message: TorchScript archives, the tar format of very
old torch, pickled whole models, and anything that asks for a global outside the allowlist.

Format facts (torch 2.x, checked against files it writes):

* zip: `<top>/data.pkl` is the object pickle; each storage is `<top>/data/<key>` (raw bytes in
  the order given by `<top>/byteorder`, "little" when absent). Persistent ids are
  `('storage', storage_type, key, location, numel)`.
* legacy: pickles of the magic number, the protocol version (1001) and a sys-info dict, then
  the object pickle (persistent ids as above plus a 6th item, `view_metadata`, that old files
  use for storage views: `(view_key, offset, size)` in elements of the root storage), then a
  pickled list of storage keys, then for each key in that order an 8-byte little-endian
  element count followed by count * element_size raw little-endian bytes.
* `storage_type` is a typed legacy name (`torch.FloatStorage`, ...) for the classic dtypes and
  `torch.storage.UntypedStorage` (numel in bytes) for newer dtypes, whose tensors are then
  rebuilt by `_rebuild_tensor_v3` with an explicit dtype global such as `torch.uint16`.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import zipfile
import zlib

import numpy as np

from senet.errors import WeightsFileError

__all__ = ["TorchFormatError", "read_state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# Checkpoint entries that commonly hold the state dict, in the order they are preferred
# (a training checkpoint may hold `state_dict` and `state_dict_ema`; like timm, take the first).
STATE_DICT_ENTRIES = ("state_dict", "model_state_dict", "model", "state_dict_ema")
MAX_DIMS = 32  # numpy 1.x's limit; a state dict's tensors have at most 5
_INT64 = 2**63  # torch's sizes, strides and offsets are int64
# What zipfile raises on a damaged or unusual archive (unsupported method, version or flag,
# encryption, names that are not UTF-8, offsets past the end, bad deflate data).
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError,
               ValueError, zlib.error)


class TorchFormatError(WeightsFileError):
    """A file that cannot be read as a PyTorch state dict; the message says why and what to do."""


class _Bad(Exception):
    """Internal: a problem found while reading; `read_state_dict` adds the file name."""


# ---------------------------------------------------------------------------------------------
# Inert stand-ins handed to the unpickler. They are sealed so that the pickle's BUILD opcode
# cannot alter them (they are shared module-level objects).


class _Sealed:
    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Bad(f"its pickle tries to set attribute {_short(name)} on {_short(self)}, which "
                   "a state dict never does; the file is damaged or not a plain state dict")

    def __delattr__(self, name):
        self.__setattr__(name, None)

    def __setstate__(self, state):
        raise _Bad(f"its pickle tries to set the state of {_short(self)}, which a state dict never "
                   "does; the file is damaged or not a plain state dict")

    def _init(self, **values):
        for name, value in values.items():
            object.__setattr__(self, name, value)


class _DType(_Sealed):
    """A torch dtype: its numpy equivalent (None when numpy has none) and element size."""

    __slots__ = ("name", "numpy", "itemsize")

    def __init__(self, name, numpy, itemsize):
        self._init(name=name, numpy=numpy, itemsize=itemsize)

    def __repr__(self):
        return f"torch.{self.name}"


# name: (numpy dtype code, itemsize). bfloat16 is read as raw uint16 and widened to float32.
_DTYPE_TABLE = {
    "float32": ("f4", 4), "float64": ("f8", 8), "float16": ("f2", 2), "bfloat16": ("u2", 2),
    "int64": ("i8", 8), "int32": ("i4", 4), "int16": ("i2", 2), "int8": ("i1", 1),
    "uint8": ("u1", 1), "uint16": ("u2", 2), "uint32": ("u4", 4), "uint64": ("u8", 8),
    "bool": ("?", 1), "complex64": ("c8", 8), "complex128": ("c16", 16),
    # Known to torch but without a numpy equivalent: refused if a tensor uses them.
    "complex32": (None, 4), "qint8": (None, 1), "quint8": (None, 1), "qint32": (None, 4),
    "quint4x2": (None, 1), "quint2x4": (None, 1), "float8_e4m3fn": (None, 1),
    "float8_e5m2": (None, 1), "float8_e4m3fnuz": (None, 1), "float8_e5m2fnuz": (None, 1),
    "float8_e8m0fnu": (None, 1), "float4_e2m1fn_x2": (None, 1),
}
_DTYPES = {name: _DType(name, code, size) for name, (code, size) in _DTYPE_TABLE.items()}
for _alias, _name in {"float": "float32", "double": "float64", "half": "float16",
                      "long": "int64", "int": "int32", "short": "int16", "cfloat": "complex64",
                      "cdouble": "complex128", "chalf": "complex32"}.items():
    _DTYPES[_alias] = _DTYPES[_name]


class _StorageType(_Sealed):
    """A storage class named in a persistent id; `dtype` is None for UntypedStorage (bytes)."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name, dtype):
        self._init(name=name, dtype=dtype, itemsize=1 if dtype is None else dtype.itemsize)

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TABLE = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
_STORAGES = {name: _StorageType(name, _DTYPES[dt]) for name, dt in _STORAGE_TABLE.items()}
_UNTYPED = _StorageType("UntypedStorage", None)


class _Marker(_Sealed):
    """A class the pickle names only as a tag (torch.Tensor, Parameter)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self._init(name=name)

    def __repr__(self):
        return self.name


_TENSOR_TYPE = _Marker("torch.Tensor")
_PARAMETER_TYPE = _Marker("torch.nn.Parameter")


class _Storage(_Sealed):
    """A reference to storage `key` (its bytes are read later), seen through a view offset."""

    __slots__ = ("key", "stype", "numel", "view_offset", "view_numel")

    def __init__(self, key, stype, numel, view_offset=0, view_numel=None):
        self._init(key=key, stype=stype, numel=numel, view_offset=view_offset,
                   view_numel=view_numel)

    def __repr__(self):
        return f"<storage {self.key}>"


class _Tensor(_Sealed):
    """A tensor yet to be built: storage + element offset + shape + strides + dtype."""

    __slots__ = ("storage", "offset", "shape", "strides", "dtype")

    def __init__(self, storage, offset, shape, strides, dtype):
        if not isinstance(storage, _Storage):
            raise _Bad("its pickle rebuilds a tensor from something that is not a storage")
        shape, strides = _int_tuple(shape, "size"), _int_tuple(strides, "stride")
        if not isinstance(offset, int) or not 0 <= offset < _INT64 or len(shape) != len(strides):
            raise _Bad("its pickle describes a tensor with an invalid offset, size or stride")
        self._init(storage=storage, offset=offset, shape=shape, strides=strides, dtype=dtype)

    def __repr__(self):
        return f"<tensor {self.dtype} {self.shape}>"


class _Device(_Sealed):
    __slots__ = ("name",)

    def __init__(self, name):
        self._init(name=name)

    def __repr__(self):
        return f"device({self.name!r})"


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _INT64 for v in value):
        raise _Bad(f"its pickle describes a tensor with an invalid {what} {_short(value)}")
    return tuple(value)


class _Callable(_Sealed):
    """An allowed global that the pickle may call; calls our own `fn`, never torch's."""

    __slots__ = ("name", "fn")

    def __init__(self, name, fn):
        self._init(name=name, fn=fn)

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except TypeError as e:
            raise _Bad(f"its pickle calls {self.name} with unexpected arguments ({e})") from None

    def __repr__(self):
        return self.name


def _rebuild_tensor(storage, storage_offset, size, stride):
    dtype = storage.stype.dtype if isinstance(storage, _Storage) else None
    if dtype is None:
        raise _Bad("its pickle rebuilds a tensor from an untyped storage without a dtype")
    return _Tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise _Bad(f"its pickle rebuilds a tensor with an invalid dtype {_short(dtype)}")
    return _Tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _Tensor):
        raise _Bad("its pickle rebuilds a Parameter from something that is not a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # Written for tensors that carry Python attributes: func(*args) rebuilds the tensor.
    if not (isinstance(func, _Callable) and func.fn in _TENSOR_REBUILDERS
            and new_type in (_TENSOR_TYPE, _PARAMETER_TYPE) and isinstance(args, tuple)):
        raise _Bad("its pickle uses torch._tensor._rebuild_from_type_v2 for something other "
                   "than a plain tensor")
    return func(*args)


def _size(*args):
    return tuple(args[0]) if args else ()


def _device(*args):
    return _Device(":".join(str(a) for a in args))


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_TENSOR_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3)

_ALLOWED = {
    ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
    ("torch._utils", "_rebuild_tensor"): _Callable("torch._utils._rebuild_tensor",
                                                   _rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2",
                                                      _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v3"): _Callable("torch._utils._rebuild_tensor_v3",
                                                      _rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter",
                                                      _rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Callable(
        "torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
    ("torch._tensor", "_rebuild_from_type_v2"): _Callable(
        "torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2),
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch._tensor", "Tensor"): _TENSOR_TYPE,
    ("torch.nn.parameter", "Parameter"): _PARAMETER_TYPE,
    ("torch.nn", "Parameter"): _PARAMETER_TYPE,
    ("torch", "Size"): _Callable("torch.Size", _size),
    ("torch", "device"): _Callable("torch.device", _device),
    ("torch.storage", "UntypedStorage"): _UNTYPED,
    ("torch", "UntypedStorage"): _UNTYPED,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only what a state dict needs; every other global is refused, never imported."""

    def __init__(self, file):
        super().__init__(file, encoding="utf-8")
        self.storages = {}  # key -> _StorageType, as first seen

    def find_class(self, module, name):
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module in ("torch", "torch.cuda") and name in _STORAGES:
            return _STORAGES[name]
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        target = _clip(f"{module}.{name}")  # from the file: any length
        if module == "torch._utils" and name.startswith("_rebuild_"):
            raise _Bad(f"it holds a kind of tensor this reader does not support ({target}: "
                       "quantized, sparse, nested or device-specific). Nothing from the file was "
                       "run. Convert it with torch to plain dense tensors and save "
                       "`model.state_dict()` again")
        hint = ""
        if module.startswith("torch.nn") or module == "__main__":
            hint = (" It looks like a whole pickled model object rather than a state dict: "
                    "load it with torch (only if you trust it) and save `model.state_dict()`.")
        raise _Bad(f"its pickle asks for the Python global {target}, which a plain state dict "
                   "never needs and which could run arbitrary code, so the file was rejected; "
                   "nothing from the file was run." + (hint or " Only if you trust the file, "
                                                       "load it with torch and save a plain "
                                                       "state dict of tensors."))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise _Bad(f"its pickle refers to an unknown persistent object {_short(pid)}; only "
                       "storages are understood. Nothing from the file was run")
        if len(pid) not in (5, 6):
            raise _Bad(f"its pickle has a malformed storage reference {_short(pid)}")
        stype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(stype, _StorageType) or not isinstance(key, str) \
                or not isinstance(numel, int) or not 0 <= numel < _INT64:
            raise _Bad(f"its pickle has a malformed storage reference {_short(pid)}")
        self.storages.setdefault(key, stype)
        if view is None:
            return _Storage(key, stype, numel)
        if not (isinstance(view, tuple) and len(view) == 3
                and all(isinstance(v, int) and 0 <= v < _INT64 for v in view[1:])):
            raise _Bad(f"its pickle has a malformed storage view {_short(view)}")
        return _Storage(key, stype, numel, view_offset=view[1], view_numel=view[2])


def _clip(text):
    """Text from the file, for a one-line message: line breaks folded, at most 120 characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _short(value):
    try:
        return _clip(repr(value))
    except Exception:  # a crafted object too deep or too large to print
        return f"<{type(value).__name__}>"


class _Budget:
    """Bytes the arrays of one file may take: a few times the file itself.

    A crafted tensor (2**70 elements, or a stride-0 view of 10**12) is described in a few
    bytes; it is refused before numpy allocates anything. bfloat16 widened to float32 and
    tensors sharing a storage can legitimately take more than the file, hence the factor.
    """

    def __init__(self, file_size):
        self.file_size, self.left = file_size, 4 * file_size + (64 << 20)

    def take(self, nbytes, what):
        if nbytes > self.left:
            size = f"{nbytes:,}" if nbytes < 10**18 else f"over 10^{len(str(nbytes)) - 1}"
            raise _Bad(f"{what} would take {size} bytes, more than a file of "
                       f"{self.file_size:,} bytes can hold; the file is damaged or crafted")
        self.left -= nbytes


class _Bounded:
    """A file for the unpickler that never reads past `end`: read(n) of a length that a
    crafted opcode declares returns what is there, instead of allocating n bytes first."""

    def __init__(self, f, end):
        self.f, self.end = f, end

    def read(self, n=-1):
        left = max(self.end - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit=-1):
        return self.f.readline(limit)


def _load(file, end):
    """Run the safe unpickler on `file` from its position up to `end`; return (object,
    storage types seen).

    pickletools walks the opcodes first, in Python: the C unpickler allocates whatever
    length a bytes opcode declares (gigabytes in a 10-byte file) before it finds the data
    short, and grows its memo table to any index a PUT names (8 bytes per index: 500 MB from
    a 5-byte opcode), while the walk checks each length against the bytes that are there,
    and each memo index against the opcodes so far (pickle numbers them 0, 1, 2...).
    """
    bounded, start = _Bounded(file, end), file.tell()
    for count, (op, arg, _) in enumerate(pickletools.genops(bounded)):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > count:
            raise ValueError(f"memo index {arg} after {count} opcodes")
    file.seek(start)
    unpickler = _SafeUnpickler(bounded)
    return unpickler.load(), unpickler.storages


def _unpickle(data_or_file, what, end=None):
    """`_load` of bytes, or of a file up to `end`, with any failure said in one line."""
    if isinstance(data_or_file, bytes):
        data_or_file, end = io.BytesIO(data_or_file), len(data_or_file)
    try:
        return _load(data_or_file, end)
    except _Bad:
        raise
    except Exception as e:  # truncated or garbled pickle data: EOFError, UnpicklingError, ...
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise _Bad(f"its {what} is truncated or damaged ({detail}); download the file again") \
            from None


# ---------------------------------------------------------------------------------------------
# Building numpy arrays.


def _build_array(tensor, name, buf, little_endian, budget):
    """One array from a storage's bytes: frombuffer, as_strided, then one copy."""
    dtype = tensor.dtype
    name = _short(name)
    if dtype.numpy is None:
        raise _Bad(f"tensor {name} has dtype {dtype!r}, which has no numpy equivalent; "
                   "convert it with torch (e.g. to float32) and save again")
    shape = tensor.shape
    if len(shape) > MAX_DIMS:
        raise _Bad(f"tensor {name} has {len(shape)} dimensions (at most {MAX_DIMS} are "
                   "supported); the file is damaged or crafted")
    out_itemsize = 4 if dtype.name == "bfloat16" else dtype.itemsize
    budget.take(math.prod(shape) * out_itemsize, f"tensor {name}")
    if 0 in shape:  # numpy refuses an empty shape whose other dimensions overflow
        budget.take(math.prod(n for n in shape if n) * out_itemsize, f"tensor {name}")
        return np.zeros(shape, np.float32 if dtype.name == "bfloat16" else dtype.numpy)
    np_dtype = np.dtype(dtype.numpy).newbyteorder("<" if little_endian else ">")
    storage = tensor.storage
    start = storage.view_offset * storage.stype.itemsize
    available = (len(buf) - start) // np_dtype.itemsize if start <= len(buf) else 0
    if storage.view_numel is not None:
        available = min(available, storage.view_numel * storage.stype.itemsize
                        // np_dtype.itemsize)
    strides = tuple(s if n > 1 else 0 for n, s in zip(shape, tensor.strides))  # unused if n is 1
    needed = tensor.offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1
    if needed > available:
        raise _Bad(f"tensor {name} needs {needed} elements of storage {_short(storage.key)} but "
                   f"it holds only {max(available, 0)}; the file is damaged, download it again")
    base = np.frombuffer(buf, dtype=np_dtype, count=available, offset=start)
    view = np.lib.stride_tricks.as_strided(
        base[tensor.offset:], shape=shape,
        strides=tuple(s * np_dtype.itemsize for s in strides), writeable=False)
    if dtype.name == "bfloat16":  # the upper half of a float32
        return (view.astype(np.uint32) << 16).view(np.float32)
    if not np_dtype.isnative and np_dtype.itemsize > 1:
        return view.astype(np_dtype.newbyteorder("="))
    return view.copy()


def _group_by_storage(tensors):
    groups = {}
    for name, tensor in tensors.items():
        groups.setdefault(tensor.storage.key, []).append(name)
    return groups


# ---------------------------------------------------------------------------------------------
# The two file formats.


def _damaged_zip(e):
    detail = " ".join(str(e).split())[:200]
    detail = "no central directory" if "not a zip file" in detail else detail
    return _Bad(f"it is a truncated, damaged or unusual zip archive ({detail}); expected a "
                "file written by torch.save, download it again")


def _member(zf, name, budget):
    """The bytes of one archive member, its declared sizes checked before anything is read.

    None when the member is absent. Torch writes stored members and reads deflated ones, so
    both are accepted; the read is bounded by the declared size, which the budget bounds.
    """
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.flag_bits & 0x41:  # traditional or strong encryption
        raise _Bad(f"its member {_short(name)} is encrypted, which torch.save never does; "
                   "save the state dict again with torch.save")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Bad(f"its member {_short(name)} is compressed with zip method "
                   f"{info.compress_type}, which torch does not read (torch.save stores "
                   "members uncompressed); save the state dict again with torch.save")
    if info.compress_size > budget.file_size or (
            info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size):
        raise _Bad(f"its member {_short(name)} declares sizes that do not fit the file; the "
                   "zip archive is damaged, download it again")
    budget.take(info.file_size, f"its member {_short(name)}")
    budget.left += info.file_size  # only checked: the bytes are freed after use
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size)  # never more than declared, whatever deflate yields
    except _ZIP_ERRORS as e:
        raise _damaged_zip(e) from None
    if len(data) != info.file_size:
        raise _Bad(f"its member {_short(name)} is truncated; download the file again")
    return data


def _read_zip(zf, budget):
    names = zf.namelist()
    tops = sorted({n.split("/", 1)[0] for n in names if n.count("/") == 1
                   and n.endswith("/data.pkl")})
    for top in tops or sorted({n.split("/", 1)[0] for n in names if "/" in n}):
        if f"{top}/constants.pkl" in names or any(n.startswith(f"{top}/code/") for n in names):
            raise _Bad("it is a TorchScript archive (torch.jit.save), which holds compiled code "
                       "rather than a plain checkpoint. Load it with torch.jit.load and save "
                       "`module.state_dict()` with torch.save")
    if not tops:
        raise _Bad("it is a zip archive but not a PyTorch checkpoint (no <archive>/data.pkl); "
                   "expected a file written by torch.save")
    if len(tops) > 1:
        raise _Bad(f"it is a zip archive with several checkpoints ({', '.join(tops)}); "
                   "expected a single file written by torch.save")
    top = tops[0]
    byteorder = _member(zf, f"{top}/byteorder", budget)
    byteorder = "little" if byteorder is None else byteorder.decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
        raise _Bad(f"its byteorder record says {_short(byteorder)}, expected 'little' or 'big'")
    obj, _ = _unpickle(_member(zf, f"{top}/data.pkl", budget), "data.pkl")
    tensors = _tensors_from(obj)
    arrays = {}
    for key, tensor_names in _group_by_storage(tensors).items():
        record = f"{top}/data/{key}"
        buf = _member(zf, record, budget)
        if buf is None:
            raise _Bad(f"storage record {_short(record)} is missing; the file is damaged, "
                       "download it again")
        for name in tensor_names:
            arrays[name] = _build_array(tensors[name], name, buf, byteorder == "little", budget)
        del buf
    return {name: arrays[name] for name in tensors}


def _read_legacy(f, file_size, budget):
    _unpickle(f, "header", file_size)  # the magic number, checked by the caller
    protocol, _ = _unpickle(f, "header", file_size)
    if protocol != LEGACY_PROTOCOL:
        raise _Bad(f"it uses legacy protocol version {_short(protocol)}, but only "
                   f"{LEGACY_PROTOCOL} exists; the file is damaged or not a torch.save file")
    sys_info, _ = _unpickle(f, "header", file_size)
    if not isinstance(sys_info, dict):
        raise _Bad("its header is damaged (the system-info record is not a dict)")
    obj, storage_types = _unpickle(f, "object pickle", file_size)
    keys, _ = _unpickle(f, "storage key list", file_size)
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise _Bad("its storage key list is damaged")
    tensors = _tensors_from(obj)
    groups = _group_by_storage(tensors)
    arrays = {}
    # The data follow in `keys` order, each as an int64 element count and the raw bytes,
    # always little-endian whatever machine wrote them.
    for key in keys:
        key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if key not in storage_types:
            raise _Bad(f"its storage list names {_short(key)}, which its pickle never uses; "
                       "the file is damaged")
        header = f.read(8)
        if len(header) < 8:
            raise _Bad("it is truncated (storage data end early); download it again")
        nbytes = int.from_bytes(header, "little") * storage_types[key].itemsize
        if f.tell() + nbytes > file_size:
            raise _Bad(f"it is truncated (storage {_short(key)} needs {nbytes} bytes, "
                       f"{file_size - f.tell()} remain); download it again")
        if key not in groups:
            f.seek(nbytes, os.SEEK_CUR)
            continue
        buf = f.read(nbytes)
        if len(buf) < nbytes:
            raise _Bad("it is truncated (storage data end early); download it again")
        for name in groups.pop(key):
            arrays[name] = _build_array(tensors[name], name, buf, True, budget)
        del buf
    if groups:
        raise _Bad(f"its tensors use storage {_short(next(iter(groups)))}, which holds no data "
                   "in the file; the file is damaged")
    return {name: arrays[name] for name in tensors}


# ---------------------------------------------------------------------------------------------
# Finding the state dict inside whatever was saved.


def _find_state_dict(obj, depth=0):
    if isinstance(obj, dict):
        if any(isinstance(v, _Tensor) for v in obj.values()):
            return obj
        if depth < 3:
            for entry in STATE_DICT_ENTRIES:
                found = _find_state_dict(obj.get(entry), depth + 1)
                if found is not None:
                    return found
    return None


def _tensors_from(obj):
    """The state dict's tensors by key: unwrapped, `module.` stripped, non-tensors dropped."""
    state = _find_state_dict(obj)
    if state is None:
        if isinstance(obj, dict):
            keys = ", ".join(_short(k) for k in list(obj)[:10]) or "none"
            raise _Bad(f"it holds no tensors where a state dict is expected (top-level keys: "
                       f"{keys}); expected a state dict, optionally under one of "
                       f"{', '.join(STATE_DICT_ENTRIES)}")
        raise _Bad(f"it holds a {type(obj).__name__} rather than a dict of tensors; "
                   "save `model.state_dict()` instead")
    tensors = {k: v for k, v in state.items() if isinstance(v, _Tensor)}
    if not all(isinstance(k, str) for k in tensors):
        raise _Bad(f"its state dict has a tensor under the key "
                   f"{_short(next(k for k in tensors if not isinstance(k, str)))}, which is not "
                   "a string; the file is damaged or not a state dict")
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ---------------------------------------------------------------------------------------------


def _sniff(head):
    """Why a file that is neither format was rejected, from its first 512 bytes.

    The tar test is the header's magic, not tarfile.is_tarfile: that one also tries every
    decompressor, and an xz header can ask for a 4 GB dictionary.
    """
    if not head:
        return "it is empty; download it again"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "it is an HDF5 file, not a PyTorch checkpoint"
    if head[257:262] == b"ustar":
        return ("it is in the tar format of very old torch versions, which is not "
                "supported; load it with torch and save it again with torch.save")
    return ("it is not a PyTorch checkpoint (neither torch.save's zip format nor its legacy "
            "format); expected a .pth/.pt file written by torch.save")


# The first pickle of a legacy file: protocol 2, the magic number as a 10-byte LONG1, STOP.
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."


def _is_legacy(f, file_size):
    """Whether the file starts with the legacy magic-number pickle (position is restored)."""
    start = f.tell()
    try:
        magic, _ = _load(f, file_size)
    except _Bad:  # a plain pickle asking for a forbidden global: say so
        raise
    except Exception:
        return False
    finally:
        f.seek(start)
    return isinstance(magic, int) and not isinstance(magic, bool) and magic == LEGACY_MAGIC


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read the state dict in the PyTorch checkpoint `path` as numpy arrays, by key.

    Never imports torch and never runs code from the file (see the module docstring).
    Arrays are fresh, writable and C-contiguous; bfloat16 becomes float32. A state dict under
    `state_dict`, `model_state_dict`, `model` or `state_dict_ema` is unwrapped, a `module.`
    prefix on every key (DataParallel) is removed, and entries that are not tensors are dropped.
    Raises TorchFormatError for anything that is not a readable state dict.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            budget = _Budget(file_size)
            head = f.read(16)
            f.seek(0)
            if head.startswith(b"PK\x03\x04"):  # how torch itself tells the zip format
                try:
                    zf = zipfile.ZipFile(f)
                except _ZIP_ERRORS as e:
                    raise _damaged_zip(e) from None
                with zf:
                    return _read_zip(zf, budget)
            if head.startswith(b"\x80"):
                if _is_legacy(f, file_size):
                    return _read_legacy(f, file_size, budget)
                if _LEGACY_HEAD.startswith(head[:file_size]):
                    raise _Bad("it is truncated (it ends inside the legacy header); "
                               "download it again")
                raise _Bad("it is a Python pickle but not a torch.save file (no torch magic "
                           "number); expected a .pth/.pt file written by torch.save")
            f.seek(0)
            raise _Bad(_sniff(f.read(512)))
    except OSError as e:
        raise TorchFormatError(f"Cannot read PyTorch checkpoint {path}: "
                               f"{e.strerror or _short(e)}.") from None
    except _Bad as e:
        raise TorchFormatError(f"Cannot read PyTorch checkpoint {path}: {e}") from None
