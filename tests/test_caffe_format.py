"""The Caffe formats: caffemodel round trips (modern, V1, legacy shapes), bad files, prototxt."""

import glob
import os
import re
import zipfile

import numpy as np
import pytest

from senet.weights import caffe
from senet.weights.caffe import (CaffeFormatError, CaffeLayer, parse_prototxt, prototxt_layers,
                                 read_caffemodel, write_caffemodel)

from caffe_reference import MODELS_DIR  # noqa: E402  (shared/reference beside the repo)
PROTOTXTS = sorted(glob.glob(os.path.join(MODELS_DIR, "*.prototxt")))


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    blob = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return [
        CaffeLayer("data", "Input", [], ["data"], []),
        CaffeLayer("conv1", "Convolution", ["data"], ["conv1"], [blob(8, 3, 3, 3)]),
        CaffeLayer("conv1/bn", "BatchNorm", ["conv1"], ["conv1"],
                   [blob(8), np.abs(blob(8)), np.array([999.982], np.float32)]),
        CaffeLayer("relu", "ReLU", ["conv1"], ["conv1"], []),
        CaffeLayer("conv2", "Convolution", ["conv1"], ["conv2"], [blob(4, 2, 1, 5), blob(4)]),
        CaffeLayer("concat", "Concat", ["conv1", "conv2"], ["concat"], []),
        CaffeLayer("fc", "InnerProduct", ["concat"], ["fc"], [blob(10, 12), blob(10)]),
        CaffeLayer("empty", "InnerProduct", ["fc"], ["empty"], [np.zeros((0, 3), np.float32)]),
        CaffeLayer("prob", "Softmax", ["fc"], ["prob"], []),
    ]


def _assert_same(read, written, legacy=False):
    assert [(l.name, l.type, l.bottoms, l.tops) for l in read] == \
           [(l.name, l.type, l.bottoms, l.tops) for l in written]
    for a, b in zip(read, written):
        assert len(a.blobs) == len(b.blobs), a.name
        for x, y in zip(a.blobs, b.blobs):
            assert x.dtype == np.float32
            expected = (1,) * (4 - y.ndim) + y.shape if legacy else y.shape
            assert x.shape == expected, a.name
            np.testing.assert_array_equal(x.reshape(y.shape), y)


@pytest.mark.parametrize("packed", [True, False])
def test_round_trip_modern(tmp_path, packed):
    path = tmp_path / "net.caffemodel"
    layers = _layers()
    write_caffemodel(path, layers, name="tiny", packed=packed)
    _assert_same(read_caffemodel(path), layers)
    _assert_same(read_caffemodel(str(path)), layers)


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("legacy", [True, False])
def test_round_trip_v1(tmp_path, packed, legacy):
    path = tmp_path / "old.caffemodel"
    layers = [l for l in _layers() if l.type not in ("Input", "BatchNorm")]
    layers.append(CaffeLayer("odd", "V1_77", ["fc"], ["odd"], [np.ones((2, 3), np.float32)]))
    write_caffemodel(path, layers, v1=True, legacy_shapes=legacy, packed=packed)
    _assert_same(read_caffemodel(path), layers, legacy=legacy)


def test_v1_type_enum_numbers(tmp_path):
    expected = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
                20: "Softmax", 3: "Concat", 5: "Data", 6: "Dropout", 25: "Eltwise", 15: "LRN",
                22: "Split", 8: "Flatten"}
    for number, name in expected.items():
        assert caffe.V1_LAYER_TYPES[number] == name
    path = tmp_path / "v1.caffemodel"
    layers = [CaffeLayer(f"l{n}", name, [], [], [np.ones(1, np.float32)])
              for n, name in expected.items()] + [CaffeLayer("x", "V1_200", [], [], [])]
    write_caffemodel(path, layers, v1=True)
    assert [l.type for l in read_caffemodel(path)] == [l.type for l in layers]
    with pytest.raises(CaffeFormatError, match="BatchNorm"):
        write_caffemodel(tmp_path / "bn.caffemodel",
                         [CaffeLayer("bn", "BatchNorm", [], [], [])], v1=True)


def _blob_bytes(*fields):
    return b"".join(fields)


def _net_bytes(layer_payloads, v1=False):
    return b"".join(caffe._bytes_field(2 if v1 else 100, p) for p in layer_payloads)


def test_unknown_fields_and_alternative_encodings(tmp_path):
    """Unknown fields of every wire type are skipped; double data and split data are read."""
    bf, vf, tag, var = caffe._bytes_field, caffe._varint_field, caffe._tag, caffe._encode_varint
    unknown = (vf(50, 7) + tag(51, 1) + b"\x00" * 8 + bf(52, b"junk")
               + tag(53, 5) + b"\x00" * 4)
    values = np.arange(6, dtype=np.float32)
    blob_split = (unknown + bf(7, bf(1, var(2) + var(3)) + unknown)
                  + bf(5, values[:2].tobytes()) + bf(5, values[2:].tobytes()))
    blob_double = bf(7, vf(1, 3) + vf(1, 2)) + bf(8, values.astype("<f8").tobytes())
    blob_double_unpacked = bf(7, vf(1, 2)) + tag(8, 1) + np.float64(1.5).tobytes() \
        + tag(8, 1) + np.float64(-2).tobytes()
    layer = (bf(1, b"fc") + unknown + bf(2, b"InnerProduct") + bf(3, b"in") + bf(4, b"out")
             + bf(7, blob_split) + bf(7, blob_double) + bf(7, blob_double_unpacked)
             + vf(10, 1))  # phase-like varint field the reader does not know
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(bf(1, b"net") + unknown + _net_bytes([layer]) + unknown)
    (fc,) = read_caffemodel(path)
    assert (fc.name, fc.type, fc.bottoms, fc.tops) == ("fc", "InnerProduct", ["in"], ["out"])
    np.testing.assert_array_equal(fc.blobs[0], values.reshape(2, 3))
    np.testing.assert_array_equal(fc.blobs[1], values.reshape(3, 2))
    np.testing.assert_array_equal(fc.blobs[2], [1.5, -2.0])
    assert all(b.dtype == np.float32 and b.flags.writeable for b in fc.blobs)


def _expect_error(path, *fragments):
    with pytest.raises(CaffeFormatError) as info:
        read_caffemodel(path)
    message = str(info.value)
    assert os.path.basename(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_text_file(tmp_path):
    path = tmp_path / "SE-ResNet-50.caffemodel"
    path.write_bytes(open(PROTOTXTS[0], "rb").read())
    _expect_error(path, "text")
    path.write_text("hello world, this is not a model\n")
    _expect_error(path, "text")


def test_jpeg_and_zip(tmp_path):
    jpeg = tmp_path / "cat.caffemodel"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    _expect_error(jpeg, "JPEG")
    model = tmp_path / "net.caffemodel"
    write_caffemodel(model, _layers())
    archive = tmp_path / "weights.caffemodel"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(model, "net.caffemodel")
    _expect_error(archive, "zip")


def test_no_layers_with_blobs(tmp_path):
    path = tmp_path / "nets.caffemodel"
    write_caffemodel(path, [l for l in _layers() if not l.blobs], name="defs only")
    _expect_error(path, "no layers with weights")
    write_caffemodel(path, [], name="nothing")
    _expect_error(path, "no layers with weights")


def test_truncated_file(tmp_path):
    full = tmp_path / "full.caffemodel"
    write_caffemodel(full, _layers(), name="tiny")
    data = full.read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:len(data) // 2])
    _expect_error(path, "truncated")
    path.write_bytes(data[:-1])
    _expect_error(path, "truncated")
    # Every cut either fails clearly or (at a field boundary) yields a prefix of the layers.
    names = [l.name for l in _layers()]
    for size in range(1, len(data)):
        path.write_bytes(data[:size])
        try:
            layers = read_caffemodel(path)
        except CaffeFormatError as exc:
            assert "cut.caffemodel" in str(exc)
        else:
            assert [l.name for l in layers] == names[:len(layers)]


def test_groups_and_bad_wire_types(tmp_path):
    path = tmp_path / "bad.caffemodel"
    good = _net_bytes([caffe._encode_layer(_layers()[1], False, False, True)])
    for junk, fragment in [(caffe._tag(9, 3), "group"), (caffe._tag(9, 4), "group"),
                           (caffe._tag(9, 6), "wire type 6"), (caffe._tag(9, 7), "wire type 7"),
                           (b"\x00\x01", "field number 0")]:
        path.write_bytes(good + junk + good)
        _expect_error(path, "not a valid Caffe .caffemodel", fragment)


def test_data_size_mismatch_names_layer(tmp_path):
    bf = caffe._bytes_field
    blob = bf(7, bf(1, caffe._encode_varint(3) + caffe._encode_varint(3))) \
        + bf(5, np.zeros(8, "<f4").tobytes())
    path = tmp_path / "mismatch.caffemodel"
    path.write_bytes(_net_bytes([bf(1, b"conv_x") + bf(2, b"Convolution") + bf(7, blob)]))
    _expect_error(path, "conv_x", "(3, 3)", "8")


def test_random_garbage_fails_cleanly(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "garbage.caffemodel"
    for size in (1, 2, 3, 10, 100, 1000, 10000):
        for _ in range(20):
            path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            try:
                read_caffemodel(path)
            except CaffeFormatError as exc:
                assert "garbage.caffemodel" in str(exc)


# ---------------------------------------------------------------------------------------------
# prototxt
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PROTOTXTS, ids=os.path.basename)
def test_official_prototxts(path):
    text = open(path, encoding="utf-8").read()
    expected = len(re.findall(r"^\s*layer\s*\{", text, flags=re.MULTILINE))
    net = parse_prototxt(path)
    layers = prototxt_layers(net)
    assert expected > 100 and len(layers) == expected
    assert layers[0]["type"] == ["Input"]
    assert layers[0]["input_param"][0]["shape"][0]["dim"] == [1, 3, 224, 224]
    assert layers[-1]["type"] == ["Softmax"]
    for layer in layers:
        assert isinstance(layer["name"][0], str) and isinstance(layer["type"][0], str)
    assert parse_prototxt(text) == net
    assert parse_prototxt(open(path, "rb").read()) == net


def test_prototxt_values():
    path = os.path.join(MODELS_DIR, "SE-ResNeXt-50.prototxt")
    net = parse_prototxt(path)
    assert net["name"] == ["SE-ResNeXt-50 (32 x 4d)"]
    by_name = {l["name"][0]: l for l in prototxt_layers(net)}
    conv = by_name["conv2_1_3x3"]["convolution_param"][0]
    assert conv["group"] == [32] and conv["num_output"] == [128] and conv["bias_term"] == [False]
    assert by_name["pool1/3x3_s2"]["pooling_param"][0]["pool"] == ["MAX"]
    assert by_name["conv1/7x7_s2/bn"]["batch_norm_param"][0]["use_global_stats"] == [True]
    assert by_name["conv2_1"]["bottom"] == ["conv2_1_1x1_up", "conv2_1_1x1_increase",
                                            "conv2_1_1x1_proj"]
    senet = prototxt_layers(parse_prototxt(os.path.join(MODELS_DIR, "SENet-154.prototxt")))
    dropout = [l for l in senet if l["type"] == ["Dropout"]][0]
    assert dropout["dropout_param"][0]["dropout_ratio"] == [pytest.approx(0.2)]


def test_prototxt_syntax():
    text = r'''
    # a comment
    name: "a \"quoted\" \x41\101\n" 'more'   # adjacent strings join
    number: -3 hex: 0x1F float: 1e-5 f2: .5 f3: 2.5f inf: -inf flag: true off: False
    enum: MAX
    msg { a: 1; b: 2, }
    msg: { a: 3 }
    angle < c: "x" >
    list: [1, 2, 3] msgs: [{ a: 1 }, { a: 2 }] empty: []
    '''
    net = parse_prototxt(text)
    assert net["name"] == ['a "quoted" AA\nmore']
    assert net["number"] == [-3] and net["hex"] == [31]
    assert net["float"] == [1e-5] and net["f2"] == [0.5] and net["f3"] == [2.5]
    assert net["inf"] == [float("-inf")] and net["flag"] == [True] and net["off"] == [False]
    assert net["enum"] == ["MAX"]
    assert net["msg"] == [{"a": [1], "b": [2]}, {"a": [3]}]
    assert net["angle"] == [{"c": ["x"]}]
    assert net["list"] == [1, 2, 3] and net["msgs"] == [{"a": [1]}, {"a": [2]}]
    assert net["empty"] == []
    assert prototxt_layers(parse_prototxt('layers { name: "old" type: CONVOLUTION }')) == \
        [{"name": ["old"], "type": ["CONVOLUTION"]}]
    assert prototxt_layers({}) == []


@pytest.mark.parametrize("text, line, fragment", [
    ('layer {\n  name: "x"\n', 3, "missing '}'"),
    ('a: 1\n}\n', 2, "expected a field name"),
    ('a: 1\nb 2\n', 2, "expected ':' or '{'"),
    ('a: 1\n\nb: "unterminated\n', 3, "unexpected text"),
    ('a: 1\nb: }\n', 2, "expected a value"),
    ('a: [1, 2\nb: 3', 2, "expected ',' or ']'"),
    ('a: "\\q"', 1, "unknown escape"),
    ('a: 1\nb: @\n', 2, "unexpected text"),
])
def test_prototxt_errors(tmp_path, text, line, fragment):
    with pytest.raises(CaffeFormatError, match=re.escape(f"line {line}: ")) as info:
        parse_prototxt(text)
    assert fragment in str(info.value)
    path = tmp_path / "broken.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeFormatError, match="broken.prototxt"):
        parse_prototxt(path)
    with pytest.raises(CaffeFormatError, match="broken.prototxt"):
        parse_prototxt(str(path))


def test_binary_file_as_prototxt(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_bytes(b"\xa2\x06\xff\xfe binary")
    with pytest.raises(CaffeFormatError, match="net.prototxt.*not a text file"):
        parse_prototxt(path)
