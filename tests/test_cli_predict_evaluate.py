"""`senet predict` and `senet evaluate`, run as commands, on answers known in advance.

The weights are an se_resnet18 rigged into a colour detector: the stem copies the Caffe
input's R, G and B (minus their means) to three channels, every residual branch is zero,
the projection shortcuts and BatchNorms pass those channels on unchanged, and the
classifier reads them. So a solid colour (r, g, b) gets exactly the logits
    SCALE * relu(r - 123) on RED, SCALE * relu(g - 117) on GREEN, SCALE * relu(b - 104) on BLUE,
plus a bias that ranks four runner-up classes: the probabilities of every solid-colour
image follow by hand, whatever its file format, and a channel-order, scaling or
class-order mistake anywhere changes them. The file records the devkit class order, so
the commands must decode and score in that order.
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli_runner
from senet.errors import ImageError
from senet.imagenet import class_table
from senet.images import eval_transform, iter_batches, load_image

REPO = Path(__file__).resolve().parents[1]
RED, GREEN, BLUE = 42, 500, 900  # output indices (devkit order) that read R, G and B
RUNNERS_UP = {7: 0.4, 8: 0.3, 9: 0.2, 10: 0.1}  # classifier bias: ranks 2-5 of a pure colour
OTHER = 600  # a class no image ever ranks in its top 5
SCALE = 0.05
DEVKIT = class_table("devkit")


# --------------------------------------------------------------------------- helpers

def expected_probs(rgb):
    """The rigged model's probabilities for a solid colour, computed by hand."""
    r, g, b = rgb
    logits = np.zeros(1000)
    for k, v in RUNNERS_UP.items():
        logits[k] = v
    logits[[RED, GREEN, BLUE]] += SCALE * np.maximum([r - 123.0, g - 117.0, b - 104.0], 0)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def top(probs, k=5):
    return [(DEVKIT[i][0], float(probs[i])) for i in np.argsort(-probs, kind="stable")[:k]]


def rigged_weights(path):
    """Write the colour-detector se_resnet18 (devkit class order) to `path`."""
    import keras

    import senet
    from senet.weights import native

    model = senet.create_model("se_resnet18")
    arrays = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        w = [np.zeros_like(a) for a in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):  # identity: var + eps = 1
            w = [np.ones_like(w[0]), w[1], w[2], np.full_like(w[3], 1 - 1e-5)]
        elif layer.name == "conv1_7x7_s2":  # centre tap: BGR input channel c -> 2 - c
            for c in range(3):
                w[0][3, 3, c, 2 - c] = 1.0
        elif layer.name.endswith("_1x1_proj"):
            for c in range(3):
                w[0][0, 0, c, c] = 1.0
        elif layer.name == "classifier":
            w[0][0, RED] = w[0][1, GREEN] = w[0][2, BLUE] = SCALE
            for k, v in RUNNERS_UP.items():
                w[1][k] = v
        arrays[layer.name] = w
    native.save(path, arrays, {"model": "se_resnet18", "input": "caffe", "class_order": "devkit",
                               "classes": 1000, "source": {"kind": "test", "file": "rigged"}})


def png_bytes(width, height, bit_depth, colour_type, raw=b""):
    """A PNG written by hand: for headers Pillow would refuse to write (30,000 px, 48-bit)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def solid(rgb, mode="RGB", size=(40, 30)):
    return Image.new("RGB", size, rgb).convert(mode)


def write_bad_files(d):
    """Files every command must refuse with one line each; returns {name: expected words}."""
    buf = Path(d, "ok.jpg")
    solid((200, 120, 40), size=(200, 150)).save(buf, quality=90)
    data = buf.read_bytes()
    buf.unlink()
    Path(d, "truncated.jpg").write_bytes(data[: len(data) // 2])
    Path(d, "notes.jpg").write_text("not a picture\n")
    solid((255, 0, 0), size=(1, 1)).save(Path(d, "dot.png"))
    Path(d, "bomb.png").write_bytes(png_bytes(30000, 30000, 1, 0))  # 65 bytes, 900 megapixels
    Path(d, "folder.jpg").mkdir()
    return {"missing.jpg": "no such file", "truncated.jpg": "truncated", "notes.jpg": "not an image",
            "dot.png": "too small", "bomb.png": "too large", "folder.jpg": "directory"}


def run_senet(*args, cwd, env=None, subprocess=False):
    """The command in this process (or, for the smoke tests, a child process), with its own
    cache directory."""
    env = {"SENET_HOME": str(Path(cwd, "senet_home")), **(env or {})}
    r = (cli_runner.run_subprocess if subprocess else cli_runner.run)(*args, cwd=cwd, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def error_lines(r, command):
    # "Building the openvino float32 engine ..." is a note, once per engine and weights.
    lines = [l for l in r.stderr.splitlines() if not l.startswith("Building the ")]
    assert all(l.startswith(f"senet {command}: error: ") for l in lines), r.stderr
    return lines


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rigged_weights(d / "rig.weights.h5")
    return d


@pytest.fixture(scope="module")
def photos(work):
    """Real photographs (scikit-image's) in every format and colour mode; [] without skimage."""
    try:
        from skimage import data
    except ImportError:
        return []
    d = work / "photos"
    d.mkdir()
    chelsea, astronaut, camera = data.chelsea(), data.astronaut(), data.camera()
    Image.fromarray(chelsea).save(d / "chelsea.jpg", quality=92)
    Image.fromarray(astronaut).save(d / "astronaut.png")
    Image.fromarray(data.coffee()).save(d / "coffee.bmp")
    Image.fromarray(data.rocket()).save(d / "rocket.webp", quality=85)
    Image.fromarray(camera).save(d / "camera_grey.png")
    alpha = np.linspace(0, 255, astronaut.shape[1]).astype(np.uint8)[None, :, None]
    rgba = np.concatenate([astronaut, np.broadcast_to(alpha, (*astronaut.shape[:2], 1))], axis=2)
    Image.fromarray(rgba, "RGBA").save(d / "astronaut_rgba.png")
    Image.fromarray(chelsea).convert("CMYK").save(d / "chelsea_cmyk.jpg", quality=95)
    Image.fromarray(camera.astype(np.uint16) * 257).save(d / "camera_16bit.png")
    return sorted(p.relative_to(work).as_posix() for p in d.iterdir())


# --------------------------------------------------------------------------- images.py

def test_load_image_modes(tmp_path):
    grey16 = (np.arange(64 * 48).reshape(48, 64) % 256).astype(np.uint8)
    Image.fromarray(grey16.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png"), np.repeat(grey16[..., None], 3, 2))

    raw = b"".join(b"\0" + np.array([[51400, 0, 65535]] * 8, ">u2").tobytes() for _ in range(8))
    (tmp_path / "rgb48.png").write_bytes(png_bytes(8, 8, 16, 2, raw))
    assert load_image(tmp_path / "rgb48.png")[0, 0].tolist() == [200, 0, 255]

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, np.arange(16)[None, :] * 17  # red, alpha 0..255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    a = rgba[..., 3:] / 255.0
    want = a * rgba[..., :3] + (1 - a) * 255  # composited on white
    assert np.abs(load_image(tmp_path / "a.png") - want).max() <= 1

    solid((0, 255, 0), "P").save(tmp_path / "p.gif")
    solid((0, 0, 255), "CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    Image.fromarray(np.full((20, 20), 0.5, np.float32), "F").save(tmp_path / "f.tiff")
    assert load_image(tmp_path / "p.gif")[0, 0].tolist() == [0, 255, 0]
    assert np.abs(load_image(tmp_path / "cmyk.jpg")[10, 10].astype(int) - [0, 0, 255]).max() <= 3
    assert load_image(tmp_path / "f.tiff")[0, 0].tolist() == [128, 128, 128]
    for p in tmp_path.iterdir():
        img = load_image(p)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, p


def test_load_image_applies_exif_orientation(tmp_path):
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue
    stored[:, 32:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "rotated.jpg").astype(int)
    assert shown.shape == (64, 32, 3)
    assert shown[8, 16, 0] > 200 and shown[8, 16, 2] < 50  # the left half is now on top
    assert shown[56, 16, 2] > 200 and shown[56, 16, 0] < 50


def test_load_image_errors_name_the_file(tmp_path):
    words = write_bad_files(tmp_path)
    for name, word in words.items():
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name)
        message = str(err.value)
        assert message.startswith(str(tmp_path / name) + ": ") and word in message, message
        assert "\n" not in message


def test_eval_transform_is_timms_resize_and_centre_crop():
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.uniform(0, 255, (9, 12, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    img = Image.fromarray(rgb)  # 480 x 360
    for w, h, size, crop_pct in [(480, 360, 224, 0.875), (300, 451, 224, 0.9),
                                 (257, 256, 96, 1.0), (100, 80, 299, 0.95)]:
        im = img.resize((w, h))
        got = eval_transform(im, size, crop_pct)
        # The protocol by hand: shorter side to floor(size / crop_pct), centre crop.
        scale = int(size // crop_pct)
        nw, nh = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
        left, top_ = round((nw - size) / 2), round((nh - size) / 2)
        want = np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR).crop(
            (left, top_, left + size, top_ + size)), np.float32)
        assert got.dtype == np.float32 and got.shape == (size, size, 3)
        np.testing.assert_array_equal(got, want)
        try:
            from timm.data import create_transform
        except ImportError:
            continue
        t = create_transform(size, crop_pct=crop_pct, interpolation="bilinear").transforms
        np.testing.assert_array_equal(got, np.asarray(t[1](t[0](im)), np.float32))
    strip = eval_transform(Image.new("RGB", (8, 100_000), (10, 20, 30)))  # no 256 x 3.2M image
    assert strip.shape == (224, 224, 3) and np.all(strip == [10, 20, 30])


def test_iter_batches_keeps_order_and_reports_failures(tmp_path):
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        solid((i * 30, 0, 0)).save(p)
        paths.append(str(p))
    (tmp_path / "bad.png").write_text("x")
    paths.insert(3, str(tmp_path / "bad.png"))
    batches = list(iter_batches(paths, batch_size=3, size=32, workers=2))
    assert [len(ok) for _, ok, _ in batches] == [3, 3, 1]
    assert [p for _, ok, _ in batches for p in ok] == [p for p in paths if "bad" not in p]
    assert [e[0] for _, _, errs in batches for e in errs] == [paths[3]]
    reds = [float(x[0, 0, 0]) for images, _, _ in batches for x in images]
    assert reds == [i * 30.0 for i in range(7)]


# --------------------------------------------------------------------------- senet predict

@pytest.mark.slow
def test_predict_every_format_gives_the_known_answer(work, photos):
    d = work / "predict"
    d.mkdir()
    exact = {  # lossless files: probabilities known to float precision
        "red.png": solid((255, 0, 0)), "green.gif": solid((0, 255, 0), "P"),
        "blue.bmp": solid((0, 0, 255)), "red_lossless.webp": solid((255, 0, 0)),
        "grey200.png": solid((200, 200, 200), "L"),
        "grey200_16bit.png": Image.fromarray(np.full((30, 40), 200 * 257, np.uint16)),
        "transparent.png": Image.fromarray(np.tile(np.uint8([[[255, 0, 0, 0]]]), (30, 40, 1))),
    }
    colour = {"red.png": (255, 0, 0), "green.gif": (0, 255, 0), "blue.bmp": (0, 0, 255),
              "red_lossless.webp": (255, 0, 0), "grey200.png": (200,) * 3,
              "grey200_16bit.png": (200,) * 3, "transparent.png": (255,) * 3}  # white behind
    for name, img in exact.items():
        img.save(d / name, **({"lossless": True} if name.endswith(".webp") else {}))
    lossy = {"red.jpg": RED, "cmyk_blue.jpg": BLUE, "green.webp": GREEN}
    solid((255, 0, 0)).save(d / "red.jpg", quality=90)
    solid((0, 0, 255), "CMYK").save(d / "cmyk_blue.jpg", quality=90)
    solid((0, 255, 0)).save(d / "green.webp", quality=80)
    bad = write_bad_files(d)
    good = [f"predict/{n}" for n in [*exact, *lossy]] + photos
    names = good[:6] + [f"predict/{n}" for n in bad] + good[6:]

    r = run_senet("predict", *names, "--weights", "rig.weights.h5", "--json", "--batch-size", 2,
                  cwd=work)
    assert r.returncode == 1, r.stderr
    errors = error_lines(r, "predict")
    assert len(errors) == len(bad), r.stderr
    for name, word in bad.items():
        assert any(f"predict/{name}: " in e and word in e for e in errors), (name, r.stderr)

    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["image"] for x in results] == good  # every good file, in order
    by_image = {}
    for x in results:
        preds = x["predictions"]
        probs = [p["probability"] for p in preds]
        assert len(preds) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all((p["wnid"], p["name"]) in DEVKIT for p in preds)
        by_image[x["image"]] = [(p["wnid"], p["probability"]) for p in preds]
    for name, rgb in colour.items():
        want = top(expected_probs(rgb))
        got = by_image[f"predict/{name}"]
        assert [w for w, _ in got] == [w for w, _ in want], name
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=2e-5, err_msg=name)
    for name, cls in lossy.items():
        assert by_image[f"predict/{name}"][0][0] == DEVKIT[cls][0], name

    if photos:  # the same model in this process, on the same files, decoded the same way
        import senet

        model = senet.create_model("se_resnet18", weights=str(work / "rig.weights.h5"))
        x = np.stack([eval_transform(load_image(work / p)) for p in photos])
        probs = model.predict(senet.preprocess_input(x), verbose=0)
        assert len({top(p, 1)[0][0] for p in probs}) > 1, "the photos should differ"
        for p, row in zip(photos, probs):
            want = top(row)
            assert [w for w, _ in by_image[p]] == [w for w, _ in want], p
            np.testing.assert_allclose([q for _, q in by_image[p]], [q for _, q in want],
                                       atol=1e-4, err_msg=p)


def test_predict_text_output_and_other_input_sizes(work):
    solid((255, 0, 0)).save(work / "red_text.png")
    r = run_senet("predict", "red_text.png", "--weights", "rig.weights.h5", "--top", 3,
                  "--size", 96, "--crop-pct", 1, cwd=work)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "red_text.png" and len(lines) == 4
    for rank, (line, (wnid, p)) in enumerate(zip(lines[1:], top(expected_probs((255, 0, 0)), 3)), 1):
        fields = line.split()
        assert fields[0] == str(rank) and fields[1] == wnid, line
        assert abs(float(fields[-1]) - p) < 1e-4, line
    assert DEVKIT[RED][1] in lines[1]


@pytest.mark.parametrize("args, words", [
    (["--top", "0"], "--top"),
    (["--crop-pct", "0"], "--crop-pct"),
    (["--crop-pct", "1.5"], "--crop-pct"),
    (["--size", "16"], "--size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "se_resnet19"], "Did you mean 'se_resnet18'"),
    (["--weights", "nowhere.weights.h5"], "nowhere.weights.h5: no such weights file"),
    (["--weights", "rig.weights.h5", "--model", "se_resnet50"], "holds se_resnet18 weights"),
])
def test_predict_bad_options_one_line(work, args, words):
    solid((255, 0, 0)).save(work / "opt.png")
    r = run_senet("predict", "opt.png", *args, cwd=work)
    assert r.returncode != 0 and r.stdout == ""
    assert len(error_lines(r, "predict")) == 1 and words in r.stderr, r.stderr


def test_predict_imagenet_weights_offline_one_line(work, tmp_path):
    """The smoke test of `senet predict`: a fresh interpreter, offline, no cache."""
    solid((255, 0, 0)).save(work / "offline.png")
    r = run_senet("predict", "offline.png", "--model", "seresnext50_32x4d", cwd=work,
                  subprocess=True, env={"HF_HUB_OFFLINE": "1", "HF_HOME": tmp_path / "hf"})
    assert r.returncode == 1
    (line,) = error_lines(r, "predict")
    assert "offline mode is on" in line and "timm/seresnext50_32x4d.racm_in1k" in line
    assert ("senet convert model.safetensors --model seresnext50_32x4d.racm_in1k --output "
            "seresnext50_32x4d.racm_in1k.weights.h5") in line and len(line) < 600, line


# --------------------------------------------------------------------------- senet evaluate

# (colour, class id in model order): 4 red all right; 2 green right, 2 labelled with the
# runner-up 7 (top-5 only); 1 blue right, 3 labelled OTHER (wrong even in top 5).
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
WINNER = {"red": RED, "green": GREEN, "blue": BLUE}
SAMPLES = [("green", 7), ("red", RED), ("blue", OTHER), ("green", GREEN), ("red", RED),
           ("blue", BLUE), ("blue", OTHER), ("green", 7), ("red", RED), ("green", GREEN),
           ("blue", OTHER), ("red", RED)]


def hits(samples):
    """(top-1, top-5) hits, from the rig's ranking: the colour's class, then RUNNERS_UP."""
    top1 = sum(label == WINNER[c] for c, label in samples)
    top5 = sum(label == WINNER[c] or label in RUNNERS_UP for c, label in samples)
    return top1, top5


@pytest.fixture(scope="module")
def val(work):
    """The same 12 JPEGs as wnid sub-folders (+1 broken file) and as a flat folder."""
    folders, flat = work / "val_folders", work / "val_flat"
    flat.mkdir()
    sorted_index = {w: i for i, (w, _) in enumerate(class_table("sorted"))}
    devkit_lines, sorted_lines = [], []
    for i, (c, label) in enumerate(SAMPLES):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        wnid = DEVKIT[label][0]
        (folders / wnid).mkdir(parents=True, exist_ok=True)
        solid(COLOURS[c], size=(64, 48)).save(folders / wnid / name, "JPEG", quality=95)
        solid(COLOURS[c], size=(64, 48)).save(flat / name, "JPEG", quality=95)
        devkit_lines.append(f"{name} {label}")
        sorted_lines.append(f"{name} {sorted_index[wnid]}")
    (flat / "README.txt").write_text("not an image, not listed\n")
    broken = folders / DEVKIT[RED][0] / "broken.JPEG"
    broken.write_bytes((folders / DEVKIT[RED][0] / name).read_bytes()[:300])
    (work / "val_devkit.txt").write_text("\n".join(devkit_lines[::-1]) + "\n")
    (work / "val_sorted.txt").write_text("\n".join(sorted_lines) + "\n")
    return folders, flat


@pytest.mark.slow
def test_evaluate_wnid_folders_counts_exactly(work, val):
    """Also the smoke test of `senet evaluate` in a fresh interpreter."""
    r = run_senet("evaluate", "val_folders", "--weights", "rig.weights.h5", "--batch-size", 2,
                  "--json", "out/result.json", cwd=work, subprocess=True)
    assert r.returncode == 1, r.stderr  # the broken file
    (error,) = error_lines(r, "evaluate")
    assert "broken.JPEG" in error and "truncated" in error, error
    result = json.loads((work / "out/result.json").read_text())
    top1, top5 = hits(SAMPLES)
    assert (top1, top5) == (7, 9)
    assert result["images"] == 12 and result["errors"] == 1
    assert result["top1"] == pytest.approx(100 * 7 / 12) and result["top5"] == pytest.approx(100 * 9 / 12)
    assert result["model"] == "se_resnet18" and result["weights"] == "rig.weights.h5"
    assert result["seconds"] > 0
    assert "(7/12)" in r.stdout and "(9/12)" in r.stdout
    assert "se_resnet18 (weights rig.weights.h5) on val_folders" in r.stdout, r.stdout


@pytest.mark.slow
def test_evaluate_flat_folder_with_label_files(work, val):
    r = run_senet("evaluate", "val_flat", "--labels", "val_devkit.txt", "--weights",
                  "rig.weights.h5", "--json", "flat.json", cwd=work)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    result = json.loads((work / "flat.json").read_text())
    assert (result["images"], result["errors"]) == (12, 0)
    assert result["top1"] == pytest.approx(100 * 7 / 12) and result["top5"] == pytest.approx(100 * 9 / 12)

    # Sorted-order ids, and only the first 5 file names.
    r = run_senet("evaluate", "val_flat", "--labels", "val_sorted.txt", "--label-order", "sorted",
                  "--limit", 5, "--weights", "rig.weights.h5", "--batch-size", 2, cwd=work)
    assert r.returncode == 0 and error_lines(r, "evaluate") == [], r.stderr  # 3 batches: an engine
    top1, top5 = hits(SAMPLES[:5])
    assert (top1, top5) == (3, 4)
    assert f"({top1}/5)" in r.stdout and f"({top5}/5)" in r.stdout, r.stdout

    # --weights none (speed runs) says so, where it once printed "weights None".
    r = run_senet("evaluate", "val_folders", "--model", "se_resnet18", "--weights", "none",
                  "--limit", 2, "--size", 64, "--engine", "keras", cwd=work)
    assert "se_resnet18 (random weights) on val_folders" in r.stdout, r.stdout


@pytest.mark.parametrize("args, words", [
    (["empty"], "no images found"),
    (["nowhere"], "nowhere: no such directory"),
    (["val_flat"], "no class sub-folders"),
    (["val_folders", "--label-order", "sorted"], "--label-order applies to a --labels file"),
    (["val_flat", "--labels", "bad_labels.txt"], "bad_labels.txt, line 2"),
    (["val_flat", "--labels", "missing.txt"], "missing.txt: no such label file"),
    (["val_flat", "--labels", "val_devkit.txt", "--limit", "0"], "--limit"),
    (["val_folders", "--model", "resnext50"], "Unknown model name"),
])
def test_evaluate_bad_inputs_one_line(work, val, args, words):
    (work / "empty").mkdir(exist_ok=True)
    (work / "bad_labels.txt").write_text("ILSVRC2012_val_00000001.JPEG 3\nx.JPEG 1000\n")
    r = run_senet("evaluate", *args, "--weights", "rig.weights.h5", cwd=work)
    assert r.returncode != 0 and r.stdout == ""
    assert len(error_lines(r, "evaluate")) == 1 and words in r.stderr, r.stderr


def test_large_jpegs_decode_at_a_reduced_scale_nearly_identically(tmp_path):
    """A 3608x2400 photo: decoded at 1/4 scale (still twice the 256 px it is resized to), the
    evaluation crop differs from the full decode by at most 2 levels of 255; an ImageNet-sized
    JPEG is decoded fully, identically."""
    from senet.images import load_pil

    photo = Image.open(REPO / "senet" / "data" / "chelsea.jpg").convert("RGB")
    big = photo.resize((photo.width * 8, photo.height * 8), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    photo.save(tmp_path / "small.jpg", quality=92)
    assert load_pil(tmp_path / "big.jpg", min_side=256).size == (902, 600)  # 1/4 scale
    full = eval_transform(load_pil(tmp_path / "big.jpg"), 224, 0.875)
    fast = eval_transform(load_pil(tmp_path / "big.jpg", min_side=256), 224, 0.875)
    assert np.abs(full - fast).max() <= 2 and np.abs(full - fast).mean() < 0.5
    np.testing.assert_array_equal(load_image(tmp_path / "small.jpg"),
                                  np.asarray(load_pil(tmp_path / "small.jpg", min_side=256)))
