"""The one catalogue of pretrained weights, keyed `arch.tag` as in timm.

Each entry says where the file is published (a Hugging Face Hub repo and file, and/or a URL),
its sha256, its format and layout, the input convention it was trained with, its classes,
the preprocessing it is evaluated with (size, crop, interpolation) and its published accuracy.
`weights="imagenet"` picks the architecture's default tag (the first listed, as in timm);
`weights="arch.tag"` or `create_model("arch.tag", weights="imagenet")` picks another.

Accuracies are timm's own evaluation (results-imagenet.csv, huggingface/pytorch-image-models
at 4e5207c, 2025-10-30) at the entry's evaluation size, except SE-BN-Inception (the paper's).
Hashes: `sha256` is the full sha256 of the published file where it could be read from the
Hub's own file page; `None` means not pinned yet: the download is then checked against the
sha256 that the Hub declares for the file (its ETag), and `python -m senet.catalogue`
prints the pinned table entries when run with network access. GitHub release files carry the
sha256 prefix in their names (PyTorch hub's convention), which is checked.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from senet.errors import ArgumentError
from senet.variants import get_variant

_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_GLUON_RELEASES = "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/download/v0.1/"


@dataclass(frozen=True)
class Pretrained:
    arch: str  # the architecture (senet.variants)
    tag: str  # the weights' name within it
    hub: str | None = None  # Hugging Face Hub repo id, e.g. "timm/seresnet50.a1_in1k"
    file: str = "model.safetensors"  # the file in the Hub repo
    sha256: str | None = None  # full sha256 of the Hub file (None: not pinned, see module doc)
    url: str | None = None  # the original release, fetched when there is no Hub copy
    url_sha256: str | None = None  # sha256 of the URL's file, or its published prefix
    layout: str = "timm"  # parameter names: "timm" (ResNet), "timm_legacy" (SENet), "caffe"
    input: str = "torch"  # input convention (senet.imagenet.CONVENTIONS)
    classes: str = "imagenet-1k"  # class set (senet.imagenet.CLASS_SETS), in sorted-wnid order
    size: int = 224  # training input size
    test_size: int | None = None  # evaluation size, when it differs
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    interpolation: str = "bilinear"  # "bilinear" or "bicubic" (the evaluation resize)
    top1: float | None = None  # published ImageNet-1k top-1 / top-5 (%) at `eval_size`
    top5: float | None = None
    license: str = "apache-2.0"
    origin: str = ""  # who trained it, how
    timm: str | None = None  # timm's `model.tag` of the same file

    @property
    def key(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def eval_size(self) -> int:
        return self.test_size or self.size

    @property
    def eval_crop_pct(self) -> float:
        return self.test_crop_pct or self.crop_pct

    @property
    def downloadable(self) -> bool:
        return bool(self.hub or self.url)

    def preprocessing(self) -> dict:
        """The evaluation transform of these weights (what predict/evaluate/export use)."""
        return {"size": self.eval_size, "crop_pct": self.eval_crop_pct,
                "interpolation": self.interpolation}


def _legacy(arch, tag, release, top1, top5, interpolation="bilinear", official=True):
    """timm's legacy SENet weights: a GitHub release file with its sha256 prefix in the name."""
    timm_name = get_variant(arch).timm
    prefix = release.rsplit("-", 1)[1].split(".")[0]
    origin = ("the SENet authors' Caffe weights, converted to PyTorch (Cadene, timm)" if official
              else "trained by timm in the 2017 layout")
    return Pretrained(arch, tag, hub=f"timm/{timm_name}.in1k", url=_TIMM_RELEASES + release,
                      url_sha256=prefix, layout="timm_legacy", interpolation=interpolation,
                      top1=top1, top5=top5, origin=origin, timm=f"{timm_name}.in1k")


def _timm(arch, tag, top1=None, top5=None, sha256=None, test=288, test_crop=0.95, size=224,
          crop=0.875, url=None, **kw):
    """timm's modern weights on the Hub (bicubic, usually evaluated at a larger test size)."""
    timm_arch = get_variant(arch).timm
    return Pretrained(arch, tag, hub=f"timm/{timm_arch}.{tag}", sha256=sha256, url=url,
                      size=size, test_size=test, crop_pct=crop, test_crop_pct=test_crop,
                      interpolation="bicubic", top1=top1, top5=top5,
                      timm=f"{timm_arch}.{tag}", **kw)


_RSB = dict(crop=0.95, test_crop=1.0, origin="timm, ResNet Strikes Back recipe")
_GLUON = dict(test=None, test_crop=None, origin="Gluon CV (MXNet), ported by timm")
_TPU = dict(crop=0.95, test_crop=1.0, origin="timm, trained on TPU")
_SW = dict(origin="timm, ImageNet-12k pretraining (Swin recipe) then ImageNet-1k fine-tuning")

ENTRIES: tuple[Pretrained, ...] = (
    # ------------------------------------------------------------------ the 2017 family
    _legacy("se_resnet18", "in1k", "v0.1-weights/seresnet18-4bb0ce65.pth", 71.742, 90.340,
            "bicubic", official=False),
    _legacy("se_resnet34", "in1k", "v0.1-weights/seresnet34-a4004e63.pth", 74.788, 92.134,
            official=False),
    _legacy("se_resnet50", "caffe_in1k", "v0.1-cadene/se_resnet50-ce0d4300.pth", 77.650, 93.732),
    _legacy("se_resnet101", "caffe_in1k", "v0.1-cadene/se_resnet101-7e38fcc6.pth", 78.370, 94.264),
    _legacy("se_resnet152", "caffe_in1k", "v0.1-cadene/se_resnet152-d17c99b7.pth", 78.662, 94.370),
    _legacy("se_resnext26_32x4d", "in1k", "v0.1-weights/seresnext26_32x4d-65ebdb501.pth",
            77.100, 93.332, "bicubic", official=False),
    _legacy("se_resnext50_32x4d", "caffe_in1k",
            "v0.1-weights/legacy_se_resnext50_32x4d-f3651bad.pth", 79.080, 94.428),
    _legacy("se_resnext101_32x4d", "caffe_in1k",
            "v0.1-weights/legacy_se_resnext101_32x4d-37725eac.pth", 80.274, 95.032),
    _legacy("senet154", "caffe_in1k", "v0.1-weights/legacy_senet154-e9eb9fe6.pth", 81.320, 95.502),
    # The official release is the only source: convert its .caffemodel by hand.
    Pretrained("se_bn_inception", "caffe_in1k", file="SE-BN-Inception.caffemodel",
               layout="caffe", input="caffe", top1=76.38, top5=92.96,
               origin="the SENet authors' Caffe release (accuracy: the paper's)"),
    # ------------------------------------------------------------------ timm's modern family
    _timm("seresnet50", "a1_in1k", 81.114, 95.122, **_RSB),
    _timm("seresnet50", "a2_in1k", 81.094, 95.230, **_RSB,
          sha256="ff82ee22e5b6c607fd984f63b83a9a8b55787b2703c4683a5cd51297d27e9460"),
    _timm("seresnet50", "a3_in1k", 77.036, 93.072, size=160, test=224, crop=0.95,
          origin="timm, ResNet Strikes Back recipe (A3, 160 px)"),
    _timm("seresnet50", "ra2_in1k", 81.288, 95.652, origin="timm, RandAugment recipe"),
    _timm("seresnet152d", "ra2_in1k", 84.344, 97.044, size=256, test=320, crop=0.95,
          test_crop=1.0, origin="timm, RandAugment recipe"),
    _timm("seresnext26d_32x4d", "bt_in1k", 78.816, 94.266, origin="timm, bag of tricks",
          sha256="c4678033c69839fdcc6f181e290e957fdbbe12d1d6543308a2e68e90f08c2e38"),
    _timm("seresnext26t_32x4d", "bt_in1k", 78.736, 94.318, origin="timm, bag of tricks"),
    _timm("seresnext50_32x4d", "racm_in1k", 82.186, 96.146,
          origin="timm, RandAugment + CutMix/Mixup"),
    _timm("seresnext50_32x4d", "gluon_in1k", 79.916, 94.816, **_GLUON),
    _timm("seresnext101_32x4d", "gluon_in1k", 80.886, 95.268, **_GLUON),
    _timm("seresnext101_64x4d", "gluon_in1k", 80.884, 95.308, **_GLUON,
          sha256="599eeb3b73f19d0a0b09dc32a5edd8861009d28c1955d48c5b61caf0df14ffe1"),
    _timm("seresnext101_32x8d", "ah_in1k", 84.192, 96.860, **_TPU),
    _timm("seresnext101d_32x8d", "ah_in1k", 84.380, 96.918, **_TPU),
    _timm("seresnextaa101d_32x8d", "sw_in12k_ft_in1k_288", 86.722, 98.184, size=288, test=320,
          crop=0.95, test_crop=1.0, **_SW),
    _timm("seresnextaa101d_32x8d", "sw_in12k_ft_in1k", 86.524, 98.034, test_crop=1.0, **_SW),
    _timm("seresnextaa101d_32x8d", "ah_in1k", 84.580, 97.062, **_TPU),
    _timm("seresnextaa101d_32x8d", "sw_in12k", classes="imagenet-12k", crop=0.95, test_crop=1.0,
          sha256="c3b87e97244ff7d69bfa026ded6cde01e653e832fa94294610836295258a1b6d",
          origin="timm, ImageNet-12k (11,821 classes), Swin recipe"),
    _timm("seresnextaa201d_32x8d", "sw_in12k_ft_in1k_384", 87.304, 98.334, size=384, test=None,
          crop=1.0, test_crop=None, **_SW),
    _timm("seresnextaa201d_32x8d", "sw_in12k", classes="imagenet-12k", size=320, test=384,
          crop=0.95, test_crop=1.0,
          sha256="5b926c6d1c0383ac036574ed4fe95a983b90678c1ae4be6c57808bc2725aa608",
          origin="timm, ImageNet-12k (11,821 classes), Swin recipe"),
    # Only the PyTorch file's sha256 is known; the restricted reader runs no pickle code.
    dataclasses.replace(
        _timm("gluon_senet154", "gluon_in1k", 81.258, 95.358, **_GLUON,
              sha256="b8f1025fc3cc81f263f0013b06d586c51d95db85cffb3cb4690264fca5373be2"),
        file="pytorch_model.bin"),
)

CATALOGUE: dict[str, Pretrained] = {e.key: e for e in ENTRIES}
# timm's names of the same weights (`legacy_seresnet50.in1k`, `senet154.gluon_in1k`, ...)
TIMM_NAMES: dict[str, str] = {e.timm: e.key for e in ENTRIES if e.timm}


def tags(arch) -> list[Pretrained]:
    """The entries of an architecture, the default first."""
    name = get_variant(arch).name
    return [e for e in CATALOGUE.values() if e.arch == name]


def default(arch) -> Pretrained | None:
    """The architecture's default weights (what `weights="imagenet"` loads), or None."""
    entries = tags(arch)
    return entries[0] if entries else None


def split(name: str) -> tuple[str, str | None]:
    """'arch.tag' -> (arch, tag); a plain model name -> (name, None). timm's names resolve."""
    name = str(name).strip()
    if name in TIMM_NAMES:
        name = TIMM_NAMES[name]
    arch, dot, tag = name.partition(".")
    return arch, (tag if dot else None)


def find(name: str) -> Pretrained:
    """The entry `arch.tag` (ours or timm's name); ArgumentError with suggestions if unknown."""
    arch, tag = split(name)
    variant = get_variant(arch)
    key = f"{variant.name}.{tag}"
    if key in CATALOGUE:
        return CATALOGUE[key]
    have = [e.key for e in tags(variant)]
    close = difflib.get_close_matches(key, have, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = f" {variant.name} has: {', '.join(have)}." if have else \
        f" {variant.name} has no published weights."
    raise ArgumentError(f"Unknown pretrained weights {name!r}.{hint}{known}")


def lookup(arch, weights: str) -> Pretrained:
    """The entry meant by `weights=` for architecture `arch`: 'imagenet', 'tag' or 'arch.tag'."""
    variant = get_variant(arch)
    if weights == "imagenet":
        entry = default(variant)
        if entry is None:
            raise ArgumentError(f"{variant.name} has no published ImageNet weights; "
                                "pass weights=None or a weights file.")
        return entry
    if "." not in weights and f"{variant.name}.{weights}" in CATALOGUE:
        return CATALOGUE[f"{variant.name}.{weights}"]
    entry = find(weights)
    if entry.arch != variant.name:
        raise ArgumentError(
            f"weights={weights!r} are {entry.key}, weights of {entry.arch}, not of "
            f"{variant.name}; build {entry.arch} (senet.create_model({entry.key!r}, "
            "weights='imagenet')) or choose one of "
            f"{', '.join(e.key for e in tags(variant)) or 'no tags'}.")
    return entry


# --------------------------------------------------------------------------- maintainer tool

def _pin() -> None:
    """Print the sha256 the Hub declares for every unpinned entry (needs network access)."""
    from huggingface_hub import HfApi

    api = HfApi()
    for e in CATALOGUE.values():
        if not e.hub or e.sha256:
            continue
        try:
            info = api.get_paths_info(e.hub, [e.file])
        except Exception as err:  # noqa: BLE001 - report and go on with the next entry
            print(f"{e.key}: {type(err).__name__}: {err}")
            continue
        lfs = getattr(info[0], "lfs", None) if info else None
        print(f"{e.key}: sha256={lfs.sha256 if lfs else None!r}")


if __name__ == "__main__":
    _pin()
