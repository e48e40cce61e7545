"""Image files to model inputs: the one place that decodes images and applies the protocol.

`load_image` turns any file Pillow reads into RGB uint8, the same way for every format, so
a PNG, a CMYK JPEG and a 16-bit TIFF of one picture give one prediction. `eval_transform`
is the published evaluation crop. `iter_batches` decodes in threads (Pillow releases the
GIL) so that decoding overlaps inference. A file that cannot be used raises `ImageError`
with its name and the problem, in one line.

Decisions:
- Transparency is composited on white, as a viewer shows it: transparent pixels often
  hold arbitrary (often black) colour that dropping the alpha channel would expose.
- 16-bit and 32-bit integer greyscale is scaled from 0-65535 to 0-255 (not clipped);
  float greyscale is taken as 0-1 when no value exceeds 1, else as 0-255.
- EXIF orientation is applied; broken EXIF data is ignored rather than failing the image.
- Truncated files are errors (Pillow's LOAD_TRUNCATED_IMAGES is left alone).
- Images under MIN_SIDE px on a side are refused, and so is anything over Pillow's
  decompression-bomb limit (2 x PIL.Image.MAX_IMAGE_PIXELS, about 179 megapixels; raise
  MAX_IMAGE_PIXELS to allow more), checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import collections
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from senet.errors import ArgumentError, DataError, ImageError
from senet.variants import DEFAULT_SIZE

MIN_SIDE = 8
DEFAULT_CROP_PCT = 0.875  # 224 of 256: the SENet paper's and timm's evaluation crop
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# Extensions that directory listings treat as images (`senet evaluate`); files given by
# name are opened whatever their extension.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm",
              ".pgm", ".pbm", ".pnm")


def _open(path) -> Image.Image:
    """Open `path` and read its header only (size and mode are known, no pixels yet)."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or not a format Pillow can read)") from None
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        what = f"{int(found[1]) / 1e6:,.0f} megapixels" if found else "too many pixels"
        raise ImageError(
            f"{path}: too large ({what}; the limit is {2 * Image.MAX_IMAGE_PIXELS / 1e6:,.0f} "
            "megapixels, against decompression bombs)") from None
    except OSError as err:
        if err.errno is not None:  # the system's, not Pillow's
            raise ImageError(f"{path}: cannot read the file ({err.strerror or err})") from None
        raise _damaged(path, err) from None
    except Exception as err:  # noqa: BLE001 - Pillow plugins raise many types on bad headers
        raise _damaged(path, err) from None


def _damaged(path, err) -> ImageError:
    detail = str(err) or type(err).__name__
    kind = "truncated" if "truncated" in detail.lower() else "damaged"
    return ImageError(f"{path}: cannot decode the image, the file is {kind} ({detail})")


def _grey16_to_8(img: Image.Image) -> Image.Image:
    """16/32-bit integer greyscale, taken as 0-65535, scaled (not clipped) to 8 bits."""
    a = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(a).astype(np.uint8), "L")


def _float_to_8(img: Image.Image) -> Image.Image:
    a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
        a = a * 255.0
    return Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB, transparency composited on white."""
    if img.mode.startswith("I"):
        img = _grey16_to_8(img)
    elif img.mode == "F":
        img = _float_to_8(img)
    if img.mode in ("La", "RGBa"):  # premultiplied alpha
        img = img.convert("RGBA" if img.mode == "RGBa" else "LA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_pil(path, min_side=None) -> Image.Image:
    """`load_image` as a Pillow RGB image (what `eval_transform` resizes).

    `min_side`: the image will be shrunk to this shorter side anyway, so a JPEG may be
    decoded at a reduced scale (libjpeg's DCT scaling, Pillow's draft mode) down to twice
    that: a 12-megapixel photo decodes about 10x faster, and the antialiased resize that
    follows still works from at least twice the final resolution. Smaller images decode
    fully, so ImageNet-sized files are unaffected.
    """
    path = os.fspath(path)
    with _open(path) as img:
        w, h = img.size
        if min(w, h) < MIN_SIDE:
            raise ImageError(f"{path}: too small ({w}x{h} px; at least {MIN_SIDE} px a side)")
        if min_side and img.format == "JPEG" and min(w, h) >= 4 * min_side:
            factor = 2 * min_side / min(w, h)
            img.draft("RGB", (math.ceil(w * factor), math.ceil(h * factor)))
        try:
            img.load()
        except Exception as err:  # noqa: BLE001 - a damaged stream fails in many ways
            raise _damaged(path, err) from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - broken EXIF must not lose a decodable image
            pass
        try:
            return _to_rgb(img)
        except (ValueError, OSError) as err:
            raise ImageError(f"{path}: unsupported colour mode {img.mode} ({err})") from None


def load_image(path) -> np.ndarray:
    """The image at `path` as RGB uint8 (H, W, 3), upright; `ImageError` if unusable."""
    return np.asarray(load_pil(path))


def eval_transform(img, size=DEFAULT_SIZE, crop_pct=DEFAULT_CROP_PCT,
                   interpolation="bilinear") -> np.ndarray:
    """The evaluation crop: shorter side to floor(size / crop_pct) (256 for 224), resampled
    with antialiasing (`interpolation`: the weights' own, bilinear or bicubic), then the
    central size x size. Float32 RGB 0-255 (H, W, 3).

    Pixel for pixel what timm / torchvision do (Resize + CenterCrop on a PIL image).
    Strips longer than 16:1 resample only the crop instead (no huge intermediate image;
    equal up to rounding, +-1 level).
    """
    if not 0 < crop_pct <= 1:
        raise ArgumentError(f"crop_pct must be in (0, 1]; got {crop_pct}.")
    if interpolation not in INTERPOLATIONS:
        raise ArgumentError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got "
                            f"{interpolation!r}.")
    resample = INTERPOLATIONS[interpolation]
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB")
    w, h = img.size
    scale_size = math.floor(size / crop_pct)
    # torchvision's Resize(int): the shorter side becomes scale_size, the longer is truncated.
    if w <= h:
        new_w, new_h = scale_size, int(scale_size * h / w)
    else:
        new_w, new_h = int(scale_size * w / h), scale_size
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    if new_w * new_h <= 16 * scale_size**2:
        resized = img.resize((new_w, new_h), resample)
        out = resized.crop((left, top, left + size, top + size))
    else:
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        out = img.resize((size, size), resample, box=box)
    return np.asarray(out, dtype=np.float32)


def _prepare(path, size, crop_pct, interpolation):
    return eval_transform(load_pil(path, min_side=math.floor(size / crop_pct)), size, crop_pct,
                          interpolation)


def iter_batches(paths, batch_size=16, size=DEFAULT_SIZE, crop_pct=DEFAULT_CROP_PCT,
                 workers=None, interpolation="bilinear"):
    """Yield (images, ok_paths, errors) in the order of `paths`, decoded by a thread pool.

    `images` is float32 (n, size, size, 3), RGB 0-255, for the n files of `ok_paths`
    (`batch_size` of them except in the last batch); `errors` lists (path, message) of the
    files that failed since the previous batch. At most about two batches are decoded
    ahead, so memory stays bounded while the caller runs the model on the current one.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    todo = iter(paths)
    ahead = 2 * batch_size + workers
    pending = collections.deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="senet-decode")

    def fill():
        while len(pending) < ahead:
            path = next(todo, None)
            if path is None:
                return
            pending.append((path, pool.submit(_prepare, path, size, crop_pct, interpolation)))

    try:
        fill()
        while pending:
            arrays, ok, errors = [], [], []
            while pending and len(ok) < batch_size:
                path, future = pending.popleft()
                fill()
                try:
                    arrays.append(future.result())
                    ok.append(path)
                except ImageError as err:
                    errors.append((path, str(err)))
            images = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
            yield images, ok, errors
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def read_label_file(path) -> list:
    """(line number, file name, label) of each `name label` line of `path` (`senet evaluate
    --labels`, `senet train --labels`); blank lines and `#` comments are skipped. The label
    is the last word, so file names may hold spaces."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such label file.")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{path}, line {lineno}: expected 'file label', got {line!r}.")
            rows.append((lineno, *parts))
    return rows
