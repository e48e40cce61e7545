"""senet.weights.torch_format against files written by the real torch (a test-only dependency)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from senet.weights.torch_format import TorchFormatError, read_state_dict  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "senet" / "weights" / "torch_format.py"
FORMATS = ["zip", "legacy"]


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def expected(t):
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def assert_matches(arrays, tensors):
    assert list(arrays) == list(tensors)
    for key, t in tensors.items():
        want = expected(t)
        got = arrays[key]
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert got.flags.writeable and got.flags.c_contiguous, key


def small_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Flatten(), torch.nn.Linear(8, 5))
    bn = model[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.num_batches_tracked.fill_(1234)
    sd = model.state_dict()
    base = torch.randn(20)
    sd.update({
        "half": torch.randn(4, 3).half(),
        "bf16": torch.randn(6).bfloat16(),
        "double": torch.randn(2, 2, dtype=torch.float64),
        "int32": torch.arange(-3, 3, dtype=torch.int32),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "transposed": torch.randn(3, 5).t(),  # non-contiguous view
        "share_a": base[2:8].view(2, 3),  # two tensors in one storage, different offsets
        "share_b": base[10:],
        "expanded": torch.randn(3, 1).expand(3, 4),  # stride 0
    })
    assert sd["share_a"].untyped_storage().data_ptr() == sd["share_b"].untyped_storage().data_ptr()
    assert not sd["transposed"].is_contiguous()
    return sd


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    sd = small_state_dict()
    arrays = read_state_dict(save(sd, tmp_path / "small.pth", fmt))
    assert_matches(arrays, sd)
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    assert arrays["1.num_batches_tracked"] == 1234
    assert arrays["half"].dtype == np.float16
    assert arrays["bf16"].dtype == np.float32
    assert arrays["scalar"].shape == ()


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_and_tensors_with_attributes(tmp_path, fmt):
    tagged = torch.randn(3)
    tagged.note = "x"  # pickled through torch._tensor._rebuild_from_type_v2
    param = torch.nn.Parameter(torch.randn(2, 2))
    param_with_state = torch.nn.Parameter(torch.randn(2))
    param_with_state.note = 1  # pickled through _rebuild_parameter_with_state
    sd = {"tagged": tagged, "param": param, "param_with_state": param_with_state}
    assert_matches(read_state_dict(save(sd, tmp_path / "p.pt", fmt)), sd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_untyped_storage_dtypes(tmp_path, fmt):
    # Newer dtypes are saved as UntypedStorage + _rebuild_tensor_v3 with a dtype global.
    values = np.array([1, 2, 65535], dtype=np.uint16)
    sd = {"u16": torch.tensor(values.astype(np.int64)).to(torch.uint16),
          "u32": torch.tensor([7, 8]).to(torch.uint32)}
    arrays = read_state_dict(save(sd, tmp_path / "u.pt", fmt))
    np.testing.assert_array_equal(arrays["u16"], values)
    assert arrays["u16"].dtype == np.uint16
    np.testing.assert_array_equal(arrays["u32"], np.array([7, 8], dtype=np.uint32))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("entry", ["state_dict", "model", "model_state_dict", "state_dict_ema"])
def test_unwraps_checkpoints_and_dataparallel(tmp_path, fmt, entry):
    sd = small_state_dict()
    checkpoint = {"epoch": 7, "arch": "senet", entry: {"module." + k: v for k, v in sd.items()},
                  "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}},
                                "param_groups": [{"lr": 0.1, "params": [0]}]}}
    assert_matches(read_state_dict(save(checkpoint, tmp_path / "ckpt.pth", fmt)), sd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_prefers_state_dict_over_ema_and_drops_non_arrays(tmp_path, fmt):
    checkpoint = {"state_dict": {"w": torch.ones(2), "n": 5, "dtype": torch.float32,
                                 "device": torch.device("cpu"), "shape": torch.Size([1, 2]),
                                 "name": "x"},
                  "state_dict_ema": {"w": torch.zeros(2)}}
    arrays = read_state_dict(save(checkpoint, tmp_path / "c.pt", fmt))
    assert list(arrays) == ["w"]
    np.testing.assert_array_equal(arrays["w"], np.ones(2, np.float32))


def test_module_prefix_kept_unless_on_every_key(tmp_path):
    sd = {"module.a": torch.ones(1), "b": torch.ones(1)}
    assert list(read_state_dict(save(sd, tmp_path / "m.pt", "zip"))) == ["module.a", "b"]


def test_big_endian_zip(tmp_path):
    sd = {"w": torch.randn(3, 4), "i": torch.arange(5), "h": torch.randn(3).half(),
          "b": torch.randn(2).bfloat16()}
    src = save(sd, tmp_path / "little.pt", "zip")
    dst = tmp_path / "big.pt"
    sizes = {}
    with zipfile.ZipFile(src) as zin:
        # The persistent ids give each storage key's element size through its storage type.
        for key, t in (("0", sd["w"]), ("1", sd["i"]), ("2", sd["h"]), ("3", sd["b"])):
            sizes[key] = t.element_size()
        with zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                raw = zin.read(info)
                name = info.filename.split("/", 1)[1]
                if name == "byteorder":
                    raw = b"big"
                elif name.startswith("data/"):
                    size = sizes[name[5:]]
                    raw = np.frombuffer(raw, f"<u{size}").astype(f">u{size}").tobytes()
                zout.writestr("big/" + name, raw)
    assert_matches(read_state_dict(dst), sd)


class _StorageRef:
    def __init__(self, pid):
        self.pid = pid


class _OldTensor:
    """Pickles like a tensor of a 2018 file, through `rebuild` (the 4-argument old one or v2)."""

    def __init__(self, rebuild, *args):
        self.rebuild, self.args = rebuild, args

    def __reduce__(self):
        return self.rebuild, self.args


class _OldPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _StorageRef) else None


def test_legacy_storage_views_as_in_old_files(tmp_path):
    # Files from torch <= 0.4 name storage views in the 6th persistent-id item:
    # (view_key, offset, size) in elements of the root storage. torch 2.x no longer writes them.
    from collections import OrderedDict

    root = np.arange(12, dtype=np.float32)
    longs = np.array([5, -6, 7], dtype=np.int64)
    whole = _StorageRef(("storage", torch.FloatStorage, "100", "cuda:0", 12, None))
    view = _StorageRef(("storage", torch.FloatStorage, "100", "cuda:0", 12, ("101", 4, 6)))
    long_storage = _StorageRef(("storage", torch.LongStorage, "200", "cpu", 3, None))
    rebuild, rebuild_v2 = torch._utils._rebuild_tensor, torch._utils._rebuild_tensor_v2
    obj = OrderedDict([
        ("a", _OldTensor(rebuild, whole, 0, (3, 4), (4, 1))),
        ("b", _OldTensor(rebuild, view, 1, (2, 2), (1, 2))),  # root elements 5, 7 / 6, 8
        ("c", _OldTensor(rebuild_v2, long_storage, 0, (3,), (1,), False, OrderedDict())),
        ("epoch", 3),
    ])
    buf = io.BytesIO()
    _OldPickler(buf, protocol=2).dump(obj)
    path = write_legacy_pickles(tmp_path / "old.pth", buf.getvalue(), keys=["200", "100"])
    with open(path, "ab") as f:
        for data in (longs, root):
            f.write(len(data).to_bytes(8, "little") + data.tobytes())

    arrays = read_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=False)  # torch agrees
    assert list(arrays) == ["a", "b", "c"]
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], reference[key].numpy())
    np.testing.assert_array_equal(arrays["b"], [[5, 7], [6, 8]])
    np.testing.assert_array_equal(arrays["c"], longs)


# --- safety -------------------------------------------------------------------------------


class Payload:
    """Pickles as a call to `func(arg)`: what a malicious checkpoint does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def payloads(marker: Path):
    return {"os.system": Payload(os.system, f"touch {marker}"),
            "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()")}


def test_payloads_really_run_under_plain_pickle(tmp_path):
    # Guards the tests below: these payloads do run when unpickled without restriction.
    for name, payload in payloads(tmp_path / "ran").items():
        pickle.loads(pickle.dumps(payload, protocol=2))
        assert (tmp_path / "ran").exists(), name
        (tmp_path / "ran").unlink()


def write_legacy_pickles(path, main_pickle: bytes, keys=()):
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(main_pickle)
        pickle.dump(list(keys), f, protocol=2)
    return path


@pytest.mark.parametrize("how", ["torch-zip", "torch-legacy", "legacy-stream", "zip-data.pkl",
                                 "plain-pickle"])
@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, how, kind):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[kind]
    obj = {"conv.weight": torch.ones(2), "evil": payload}
    path = tmp_path / f"evil-{how}.pth"
    if how == "torch-zip":
        save(obj, path, "zip")
    elif how == "torch-legacy":
        save(obj, path, "legacy")
    elif how == "legacy-stream":
        write_legacy_pickles(path, pickle.dumps({"evil": payload}, protocol=2))
    elif how == "zip-data.pkl":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"evil": payload}, protocol=2))
            z.writestr("archive/version", "3\n")
            z.writestr("archive/byteorder", "little")
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(TorchFormatError) as info:
        read_state_dict(path)
    message = str(info.value)
    # Protocol 2 spells the builtins module the Python 2 way.
    forbidden = {"os.system": [f"{os.system.__module__}.system"],
                 "exec": ["builtins.exec", "__builtin__.exec"]}[kind]
    assert any(name in message for name in forbidden), message
    assert "nothing from the file was run" in message
    assert path.name in message
    assert not marker.exists()


def test_persistent_id_of_unknown_type_is_refused(tmp_path):
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "x", "y") if obj == "special" else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"a": "special"})
    path = write_legacy_pickles(tmp_path / "pid.pth", buf.getvalue())
    with pytest.raises(TorchFormatError, match="unknown persistent object"):
        read_state_dict(path)


def test_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(TorchFormatError, match=r"torch\.nn\..*state_dict\(\)"):
        read_state_dict(path)


def test_module_does_not_import_torch():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('tf', {str(MODULE_FILE)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- files that are not readable state dicts ------------------------------------------------


def not_checkpoints(tmp_path):
    files = {
        "text.pth": b"this is a text file, not weights\n",
        "random.pth": np.random.default_rng(0).bytes(4096),
        "empty.pth": b"",
        "weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(100),
        "plain-pickle.pkl": pickle.dumps({"a": [1, 2, 3]}, protocol=2),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in files]


def test_not_a_checkpoint(tmp_path):
    for path in not_checkpoints(tmp_path):
        with pytest.raises(TorchFormatError) as info:
            read_state_dict(path)
        assert path.name in str(info.value)
    with pytest.raises(TorchFormatError, match="empty"):
        read_state_dict(tmp_path / "empty.pth")
    with pytest.raises(TorchFormatError, match="HDF5"):
        read_state_dict(tmp_path / "weights.h5")


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_tensors(tmp_path, fmt):
    path = save({"epoch": 3, "state_dict": {"n": 1}}, tmp_path / "none.pth", fmt)
    with pytest.raises(TorchFormatError, match="no tensors") as info:
        read_state_dict(path)
    assert "none.pth" in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated(tmp_path, fmt):
    sd = small_state_dict()
    full = save(sd, tmp_path / "full.pth", fmt).read_bytes()
    cuts = [5, 14, 60, len(full) // 2, len(full) - 100, len(full) - 3, len(full) - 1]
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.pth"
        path.write_bytes(full[:cut])
        with pytest.raises(TorchFormatError) as info:
            read_state_dict(path)
        message = str(info.value)
        assert path.name in message
        assert "truncated" in message or "damaged" in message, message


def test_truncated_inside_storage_data(tmp_path):
    sd = {"w": torch.randn(1000)}
    full = save(sd, tmp_path / "full.pth", "legacy").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(full[:-10])
    with pytest.raises(TorchFormatError, match="truncated"):
        read_state_dict(path)


def test_torchscript_archive(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(TorchFormatError, match="TorchScript") as info:
        read_state_dict(path)
    assert "scripted.pt" in str(info.value)


def test_tar_format_of_old_torch(tmp_path):
    path = tmp_path / "ancient.pth"
    with tarfile.open(path, "w") as tar:  # the member layout of torch < 0.1.10 files
        for name in ("sys_info", "pickle", "tensors", "storages"):
            data = pickle.dumps({}, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(TorchFormatError, match="tar format.*not supported") as info:
        read_state_dict(path)
    assert "ancient.pth" in str(info.value)


def test_damaged_zip_member(tmp_path):
    path = save({"w": torch.randn(1000)}, tmp_path / "crc.pth", "zip")
    data = bytearray(path.read_bytes())
    at = data.index(np.asarray(torch.load(path)["w"]).tobytes()[:16])
    data[at + 100] ^= 0xFF  # flip a byte inside the stored tensor: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(TorchFormatError, match="damaged") as info:
        read_state_dict(path)
    assert "crc.pth" in str(info.value)


# --- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_large_state_dict(tmp_path, fmt):
    torch.manual_seed(1)
    sd = {f"layer{i}.weight": torch.randn(1024, 1024) for i in range(24)}  # ~100 MB
    sd["head.weight"] = torch.randn(1000, 2048)
    path = save(sd, tmp_path / "large.pth", fmt)
    start = time.perf_counter()
    arrays = read_state_dict(path)
    elapsed = time.perf_counter() - start
    print(f"\n{fmt}: read {path.stat().st_size / 1e6:.0f} MB in {elapsed:.2f} s")
    assert_matches(arrays, sd)
