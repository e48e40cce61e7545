"""The TF checkpoint reader against checkpoints that TensorFlow itself writes.

TensorFlow is only a test dependency here: it writes the files and is the reference reader.
Graph-mode saving happens inside `tf.Graph().as_default()`, so eager mode is never switched off
for other tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

from senet.weights import tf1_checkpoint  # noqa: E402
from senet.weights.tf1_checkpoint import TF1CheckpointError, crc32c, read_checkpoint  # noqa: E402

MODULE_FILE = Path(tf1_checkpoint.__file__)

# A few variables of the original TF port of SE-ResNet-50, with their real shapes.
PORT_VARIABLES = {
    "conv1/7x7_s2/kernel": ((7, 7, 3, 64), np.float32),
    "conv1/7x7_s2/bn/gamma": ((64,), np.float32),
    "conv1/7x7_s2/bn/beta": ((64,), np.float32),
    "conv1/7x7_s2/bn/moving_mean": ((64,), np.float32),
    "conv1/7x7_s2/bn/moving_variance": ((64,), np.float32),
    "conv2_1_1x1_reduce/kernel": ((1, 1, 64, 128), np.float32),
    "conv2_1_1x1_reduce/bn/gamma": ((128,), np.float32),
    "conv2_1_3x3/kernel": ((3, 3, 4, 128), np.float32),
    "conv2_1_1x1_down/kernel": ((1, 1, 256, 16), np.float32),
    "conv2_1_1x1_down/bias": ((16,), np.float32),
    "conv2_1_1x1_up/kernel": ((1, 1, 16, 256), np.float32),
    "conv2_1_1x1_up/bias": ((256,), np.float32),
    "dense/kernel": ((2048, 1000), np.float32),
    "dense/bias": ((1000,), np.float32),
    "half/values": ((3, 5), np.float16),
}


def _random(shape, dtype, rng):
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-1000, 1000, shape).astype(dtype)


def _save_tf1(prefix, variables, *, sharded=False, global_step=True, seed=0):
    """Save `variables` {name: (shape, dtype)} the TF 1.x way: graph, session, Saver.

    With `sharded`, the variables alternate between two CPU devices so that the sharded Saver
    writes two data files. Returns the path that Saver.save returned.
    """
    rng = np.random.default_rng(seed)
    config = tf.compat.v1.ConfigProto(device_count={"CPU": 2}) if sharded else None
    with tf.Graph().as_default():
        for i, (name, (shape, dtype)) in enumerate(variables.items()):
            with tf.device(f"/cpu:{i % 2 if sharded else 0}"):
                tf.compat.v1.get_variable(name, initializer=_random(shape, dtype, rng))
        if global_step:
            step = tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver(sharded=sharded)
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            if global_step:
                sess.run(step.assign(1234))
            return saver.save(sess, os.fspath(prefix))


def _save_raw(prefix, tensors):
    """Write a bundle directly with the SaveV2 op (eager): fast for many or odd tensors."""
    names = list(tensors)
    tf.raw_ops.SaveV2(prefix=os.fspath(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])
    return os.fspath(prefix)


def _expected(prefix):
    """Every non-string tensor as TensorFlow's own reader returns it."""
    reader = tf.train.load_checkpoint(os.fspath(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(os.fspath(prefix))
            if dtypes[name] != tf.string}


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if value.dtype.name == "bfloat16":  # read as float32, losslessly
            value = value.astype(np.float32)
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.fixture(scope="module")
def tf1_checkpoint_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tf1")
    prefix = _save_tf1(directory / "model.ckpt", PORT_VARIABLES)
    return Path(prefix)


def test_reads_what_tf1_saver_wrote(tf1_checkpoint_dir):
    got = read_checkpoint(tf1_checkpoint_dir)
    _assert_same(got, _expected(tf1_checkpoint_dir))
    assert got["global_step"].dtype == np.int64 and got["global_step"] == 1234
    assert got["conv2_1_3x3/kernel"].shape == (3, 3, 4, 128)
    assert got["half/values"].dtype == np.float16
    got["dense/bias"][0] = 1.0  # the arrays belong to the caller


@pytest.mark.parametrize("spelling", ["prefix", "index", "data", "meta", "directory"])
def test_accepts_every_spelling_of_the_checkpoint(tf1_checkpoint_dir, spelling):
    prefix = os.fspath(tf1_checkpoint_dir)
    path = {"prefix": prefix, "index": prefix + ".index",
            "data": prefix + ".data-00000-of-00001", "meta": prefix + ".meta",
            "directory": os.path.dirname(prefix)}[spelling]
    _assert_same(read_checkpoint(path), _expected(prefix))
    _assert_same(read_checkpoint(Path(path)), _expected(prefix))


def test_moved_directory_and_directory_without_state_file(tf1_checkpoint_dir, tmp_path):
    original = tmp_path / "original"
    shutil.copytree(tf1_checkpoint_dir.parent, original)
    tf.compat.v1.train.update_checkpoint_state(os.fspath(original),
                                               os.fspath(original / "model.ckpt"))
    want = _expected(original / "model.ckpt")
    # Moved after saving: the state file still names the old absolute path.
    moved = tmp_path / "moved"
    original.rename(moved)
    assert os.fspath(original / "model.ckpt") in (moved / "checkpoint").read_text()
    _assert_same(read_checkpoint(moved), want)
    # No state file: the single .index decides.
    (moved / "checkpoint").unlink()
    _assert_same(read_checkpoint(moved), want)


def test_state_file_picks_the_latest_of_several(tmp_path):
    old = _save_raw(tmp_path / "model.ckpt-1", {"w": tf.constant([1.0])})
    new = _save_raw(tmp_path / "model.ckpt-2", {"w": tf.constant([2.0])})
    with pytest.raises(TF1CheckpointError, match="several checkpoints"):
        read_checkpoint(tmp_path)
    tf.compat.v1.train.update_checkpoint_state(os.fspath(tmp_path), os.path.basename(new),
                                               [os.path.basename(old), os.path.basename(new)])
    assert read_checkpoint(tmp_path)["w"].tolist() == [2.0]


def test_non_ascii_path_in_state_file(tmp_path):
    directory = tmp_path / "gewichte_äöü"
    directory.mkdir()
    prefix = _save_raw(directory / "modèl.ckpt", {"w": tf.constant([3.0, 4.0])})
    tf.compat.v1.train.update_checkpoint_state(os.fspath(directory), prefix)
    assert read_checkpoint(directory)["w"].tolist() == [3.0, 4.0]


def test_many_variables_in_two_shards(tmp_path):
    """300 variables, ~50 MB, on two devices: the sharded Saver writes several data files."""
    rng = np.random.default_rng(1)
    variables = {}
    for i in range(300):
        stage, unit = 2 + i // 75, 1 + i % 75
        shape = [(3, 3, 32, 144), (1, 1, 256, 160), (40960,)][i % 3]
        variables[f"conv{stage}_{unit}_{rng.integers(1000)}/kernel"] = (shape, np.float32)
    variables["dense/kernel"] = ((2048, 1000), np.float32)
    prefix = _save_tf1(tmp_path / "model.ckpt", variables, sharded=True)
    data = sorted(p.name for p in tmp_path.glob("model.ckpt.data-*"))
    # One shard per device; global_step, created without a device, may get its own.
    assert len(data) >= 2 and data[-1].endswith(f"-of-{len(data):05d}"), data
    assert sum(p.stat().st_size for p in tmp_path.glob("model.ckpt.data-*")) > 45e6
    got = read_checkpoint(tmp_path)
    assert len(got) == 302  # with global_step
    _assert_same(got, _expected(prefix))


def test_index_spanning_several_table_blocks(tmp_path):
    """TF cuts the index into 256 KiB blocks; long, distinct names give several of them."""
    names = [f"{i:04d}/conv5_3_1x1_increase/bn/moving_variance/" + "x" * 150 for i in range(3000)]
    tensors = {n: tf.constant(np.full((i % 7,), i, np.float32)) for i, n in enumerate(names)}
    prefix = _save_raw(tmp_path / "many", tensors)
    assert os.path.getsize(prefix + ".index") > 2 * 262144  # three blocks
    got = read_checkpoint(prefix)
    assert len(got) == 3000
    _assert_same(got, _expected(prefix))


def test_tf2_object_based_checkpoint(tmp_path):
    module = tf.Module()
    rng = np.random.default_rng(2)
    module.kernel = tf.Variable(rng.standard_normal((3, 3, 8, 16)).astype(np.float32))
    module.bias = tf.Variable(rng.standard_normal(16).astype(np.float64))
    module.layer = tf.keras.layers.Dense(5)
    module.layer.build((None, 4))
    ckpt = tf.train.Checkpoint(model=module)
    prefix = ckpt.save(os.fspath(tmp_path / "ckpt"))
    got = read_checkpoint(tmp_path)
    assert "model/kernel/.ATTRIBUTES/VARIABLE_VALUE" in got
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in got  # a string tensor: skipped
    _assert_same(got, _expected(prefix))


def test_every_numeric_dtype_and_odd_shapes(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {
        "f64": tf.constant(rng.standard_normal((2, 3))),
        "i32": tf.constant(rng.integers(-2**31, 2**31, (4,), dtype=np.int32)),
        "u8": tf.constant(rng.integers(0, 256, (5,), dtype=np.uint8)),
        "i16": tf.constant(rng.integers(-2**15, 2**15, (5,), dtype=np.int16)),
        "i8": tf.constant(rng.integers(-128, 128, (5,), dtype=np.int8)),
        "u16": tf.constant(rng.integers(0, 2**16, (5,), dtype=np.uint16)),
        "u32": tf.constant(rng.integers(0, 2**32, (5,), dtype=np.uint32)),
        "u64": tf.constant(rng.integers(0, 2**63, (5,), dtype=np.uint64)),
        "i64": tf.constant(np.array([-(2**62), 2**62], np.int64)),
        "bool": tf.constant(rng.random(9) > 0.5),
        "c64": tf.constant((rng.standard_normal(3) + 1j).astype(np.complex64)),
        "c128": tf.constant(rng.standard_normal(3) + 1j),
        "f16": tf.constant(rng.standard_normal((2, 2)).astype(np.float16)),
        "bf16": tf.cast(tf.constant(rng.standard_normal((3, 4)).astype(np.float32)),
                        tf.bfloat16),
        "scalar": tf.constant(np.float32(7.5)),
        "empty": tf.zeros((0, 3)),
        "text": tf.constant(["a", "bc"]),
    }
    prefix = _save_raw(tmp_path / "dtypes", tensors)
    got = read_checkpoint(prefix)
    assert "text" not in got
    assert got["bf16"].dtype == np.float32
    assert got["empty"].shape == (0, 3) and got["scalar"].shape == ()
    _assert_same(got, _expected(prefix))


def test_crc32c_matches_reference_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(4)
    for n in (1, 255, 4095, 4096, 4097, 70001, 256 * 16384 + 77):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == tf1_checkpoint._crc_loop(data, 0xFFFFFFFF) ^ 0xFFFFFFFF, n


def test_module_does_not_import_tensorflow():
    code = ("import sys, importlib.util\n"
            "sys.modules['tensorflow'] = None\n"
            f"spec = importlib.util.spec_from_file_location('m', {os.fspath(MODULE_FILE)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "assert not any(k.startswith('tensorflow') for k in sys.modules if sys.modules[k])\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Broken inputs: one clear TF1CheckpointError naming the file -----------------------------

@pytest.fixture()
def small_checkpoint(tmp_path):
    prefix = _save_raw(tmp_path / "model.ckpt",
                       {"a/kernel": tf.constant(np.arange(20000, dtype=np.float32)),
                        "b/bias": tf.constant(np.arange(10, dtype=np.float32))})
    return Path(prefix)


def _data(prefix):
    return Path(os.fspath(prefix) + ".data-00000-of-00001")


def _index(prefix):
    return Path(os.fspath(prefix) + ".index")


def test_missing_data_file(small_checkpoint):
    _data(small_checkpoint).unlink()
    with pytest.raises(TF1CheckpointError, match=r"model\.ckpt\.data-00000-of-00001.*not found"):
        read_checkpoint(small_checkpoint)


def test_missing_second_shard(tmp_path):
    prefix = _save_tf1(tmp_path / "model.ckpt", {"a": ((3,), np.float32), "b": ((4,), np.float32)},
                       sharded=True, global_step=False)
    Path(prefix + ".data-00001-of-00002").unlink()
    with pytest.raises(TF1CheckpointError, match=r"data-00001-of-00002.*not found"):
        read_checkpoint(prefix)


def test_missing_index_file(small_checkpoint):
    _index(small_checkpoint).unlink()
    with pytest.raises(TF1CheckpointError, match=r"model\.ckpt\.index.*copy the \.index"):
        read_checkpoint(small_checkpoint)
    with pytest.raises(TF1CheckpointError, match=r"model\.ckpt\.index"):
        read_checkpoint(_data(small_checkpoint))


def test_no_checkpoint_at_all(tmp_path):
    with pytest.raises(TF1CheckpointError, match=r"nothing\.index.*not found"):
        read_checkpoint(tmp_path / "nothing")
    with pytest.raises(TF1CheckpointError, match="holds no checkpoint"):
        read_checkpoint(tmp_path)


def test_truncated_data_file(small_checkpoint):
    data = _data(small_checkpoint)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(TF1CheckpointError, match=r"data-00000-of-00001.*truncated"):
        read_checkpoint(small_checkpoint)


def test_damaged_data_fails_crc_unless_not_verified(small_checkpoint):
    data = _data(small_checkpoint)
    raw = bytearray(data.read_bytes())
    raw[40000] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(TF1CheckpointError, match=r"data-00000-of-00001.*'a/kernel'.*damaged"):
        read_checkpoint(small_checkpoint)
    got = read_checkpoint(small_checkpoint, verify=False)
    assert got["a/kernel"][10000] != 10000.0


def test_damaged_index_fails_crc(small_checkpoint):
    index = _index(small_checkpoint)
    raw = bytearray(index.read_bytes())
    raw[raw.index(b"a/kernel")] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(TF1CheckpointError, match=r"model\.ckpt\.index.*damaged"):
        read_checkpoint(small_checkpoint)


@pytest.mark.parametrize("content", [b"", b"abc", np.random.default_rng(0).bytes(200), b"\0" * 4096],
                         ids=["empty", "abc", "random", "zeros"])
def test_garbage_or_empty_index(small_checkpoint, content):
    _index(small_checkpoint).write_bytes(content)
    with pytest.raises(TF1CheckpointError, match=r"model\.ckpt\.index.*not a TensorFlow"):
        read_checkpoint(small_checkpoint)


def test_an_unrelated_file(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(TF1CheckpointError, match=r"weights\.h5.*not a TensorFlow checkpoint"):
        read_checkpoint(path)


def test_v1_format_checkpoint(tmp_path):
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("w", initializer=np.ones(3, np.float32))
        saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, os.fspath(tmp_path / "old.ckpt"))
    assert not os.path.exists(prefix + ".index")
    for path in (prefix, tmp_path):
        with pytest.raises(TF1CheckpointError, match=r"old\.ckpt.*V1 format.*save it again"):
            read_checkpoint(path)


def test_partitioned_variable(tmp_path):
    prefix = os.fspath(tmp_path / "part")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["w", "w"],
                      shape_and_slices=["4 2 0,2:-", "4 2 2,2:-"],
                      tensors=[tf.ones((2, 2)), tf.zeros((2, 2))])
    with pytest.raises(TF1CheckpointError, match=r"part\.index.*'w'.*slices"):
        read_checkpoint(prefix)


# --- A large checkpoint: only when asked, it writes ~300 MB ---------------------------------

@pytest.mark.skipif(not os.environ.get("SENET_LARGE_TESTS"), reason="set SENET_LARGE_TESTS=1")
def test_large_checkpoint_load_time(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {f"conv{i // 3}/kernel{i % 3}": tf.constant(
        rng.standard_normal((3, 3, 256, 256 + i % 5), dtype=np.float32)) for i in range(120)}
    tensors.update({f"bn{i}/gamma": tf.constant(rng.standard_normal(256, dtype=np.float32))
                    for i in range(400)})
    prefix = _save_raw(tmp_path / "large", tensors)
    size = os.path.getsize(prefix + ".data-00000-of-00001")
    for verify in (True, False):
        start = time.perf_counter()
        got = read_checkpoint(prefix, verify=verify)
        seconds = time.perf_counter() - start
        print(f"\nread_checkpoint({size / 1e6:.0f} MB, {len(got)} tensors, verify={verify}): "
              f"{seconds:.2f} s")
    _assert_same(got, _expected(prefix))


def test_eager_mode_is_still_on():
    """The graph-mode savers above must not leak into the tests that run after these."""
    assert tf.executing_eagerly()
