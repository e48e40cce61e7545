"""The one table of SENet variants.

Every architecture the package builds is a row here; `senet.models` turns a row into a
Keras model, the weight converters use the same row to map names, and `senet list` prints it.
Widths are those of the first residual stage; each later stage doubles them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# Official Caffe ImageNet evaluation: BGR, 0-255, minus this mean, no std.
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
DEFAULT_SIZE = 224  # the ImageNet input (and evaluation crop) of every published model
MIN_SIZE = 32  # the smallest input side: stride 32 leaves one pixel
TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"


@dataclass(frozen=True)
class Variant:
    name: str  # the `create_model` name, timm-style
    constructor: str  # the Keras-style constructor, e.g. "SEResNet50"
    title: str  # the name in the paper / official release
    family: str  # "resnet" (residual stages) or "inception" (SE-BN-Inception)
    depths: tuple = ()  # blocks per stage (conv2..conv5)
    block: str = "bottleneck"  # "bottleneck" or "basic"
    widths: tuple = ()  # stage-2 widths: bottleneck (reduce, 3x3, out); basic (3x3, 3x3)
    groups: int = 1  # cardinality of the 3x3 conv
    stride_on: str = "1x1"  # which conv of a block's first unit strides: "1x1" (Caffe ResNet) or "3x3"
    stem: str = "7x7"  # "7x7": one 7x7/2 conv; "3x3": three 3x3 convs (64, 64, 128), first /2
    proj_kernel_from_stage3: int = 1  # kernel of the projection shortcut from stage 3 on
    dropout: float = 0.0  # before the classifier
    prototxt: str | None = None  # official deploy definition, if the variant is official
    params: int | None = None  # trainable parameters: official count, or timm's for its variants
    macs: int | None = None  # multiply-adds per 224 px image, convs and dense (senet.bench.macs)
    top1_err: float | None = None  # published single-crop top-1 error (%)
    top5_err: float | None = None
    # Published ImageNet weights fetched by weights="imagenet": timm's release of the official
    # Caffe weights (Cadene's conversion) or timm's own training, under TIMM_RELEASES.
    # The 8 hex digits after the last '-' of the file name are the sha256 prefix.
    weights_file: str | None = None
    weights_top1: float | None = None  # timm's evaluation of that file (224 px), if published
    timm: str | None = None  # timm's model of the same architecture (the reference and peer)

    @property
    def weights_url(self) -> str | None:
        return TIMM_RELEASES + self.weights_file if self.weights_file else None

    @property
    def weights_sha256(self) -> str | None:
        if not self.weights_file:
            return None
        return self.weights_file.rsplit("-", 1)[1].split(".")[0]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("se_resnet18", "SEResNet18", "SE-ResNet-18", "resnet", (2, 2, 2, 2),
                block="basic", widths=(64, 64), params=11_778_592, macs=1_814_160_384,
                weights_file="v0.1-weights/seresnet18-4bb0ce65.pth",
                timm="legacy_seresnet18"),
        Variant("se_resnet34", "SEResNet34", "SE-ResNet-34", "resnet", (3, 4, 6, 3),
                block="basic", widths=(64, 64), params=21_958_868, macs=3_663_918_592,
                weights_file="v0.1-weights/seresnet34-a4004e63.pth",
                timm="legacy_seresnet34"),
        Variant("se_resnet50", "SEResNet50", "SE-ResNet-50", "resnet", (3, 4, 6, 3),
                widths=(64, 64, 256), prototxt="SE-ResNet-50.prototxt",
                params=28_088_024, macs=3_860_488_192, top1_err=22.37, top5_err=6.36,
                weights_file="v0.1-cadene/se_resnet50-ce0d4300.pth",
                timm="legacy_seresnet50", weights_top1=77.65),
        Variant("se_resnet101", "SEResNet101", "SE-ResNet-101", "resnet", (3, 4, 23, 3),
                widths=(64, 64, 256), prototxt="SE-ResNet-101.prototxt",
                params=49_326_872, macs=7_574_937_600, top1_err=21.75, top5_err=5.72,
                weights_file="v0.1-cadene/se_resnet101-7e38fcc6.pth",
                timm="legacy_seresnet101", weights_top1=78.37),
        Variant("se_resnet152", "SEResNet152", "SE-ResNet-152", "resnet", (3, 8, 36, 3),
                widths=(64, 64, 256), prototxt="SE-ResNet-152.prototxt",
                params=66_821_848, macs=11_288_993_792, top1_err=21.34, top5_err=5.54,
                weights_file="v0.1-cadene/se_resnet152-d17c99b7.pth",
                timm="legacy_seresnet152", weights_top1=78.66),
        Variant("se_resnext26_32x4d", "SEResNeXt26", "SE-ResNeXt-26 (32x4d)", "resnet",
                (2, 2, 2, 2), widths=(128, 128, 256), groups=32, stride_on="3x3",
                params=16_790_280, macs=2_472_099_840,
                weights_file="v0.1-weights/seresnext26_32x4d-65ebdb501.pth",
                timm="legacy_seresnext26_32x4d"),
        Variant("se_resnext50_32x4d", "SEResNeXt50", "SE-ResNeXt-50 (32x4d)", "resnet",
                (3, 4, 6, 3), widths=(128, 128, 256), groups=32, stride_on="3x3",
                prototxt="SE-ResNeXt-50.prototxt", params=27_559_896, macs=4_232_994_816,
                top1_err=20.97, top5_err=5.54,
                weights_file="v0.1-weights/legacy_se_resnext50_32x4d-f3651bad.pth",
                timm="legacy_seresnext50_32x4d", weights_top1=79.08),
        Variant("se_resnext101_32x4d", "SEResNeXt101", "SE-ResNeXt-101 (32x4d)", "resnet",
                (3, 4, 23, 3), widths=(128, 128, 256), groups=32, stride_on="3x3",
                prototxt="SE-ResNeXt-101.prototxt", params=48_955_416, macs=7_974_739_968,
                top1_err=19.81, top5_err=4.96,
                weights_file="v0.1-weights/legacy_se_resnext101_32x4d-37725eac.pth",
                timm="legacy_seresnext101_32x4d", weights_top1=80.27),
        Variant("senet154", "SENet154", "SENet-154", "resnet", (3, 8, 36, 3),
                widths=(128, 256, 256), groups=64, stride_on="3x3", stem="3x3",
                proj_kernel_from_stage3=3, dropout=0.2, prototxt="SENet-154.prototxt",
                params=115_088_984, macs=20_688_363_520, top1_err=18.68, top5_err=4.47,
                weights_file="v0.1-weights/legacy_senet154-e9eb9fe6.pth",
                timm="legacy_senet154", weights_top1=81.32),
        Variant("se_bn_inception", "SEBNInception", "SE-BN-Inception", "inception",
                prototxt="SE-BN-Inception.prototxt", params=11_931_622, macs=2_033_239_424,
                top1_err=23.62, top5_err=7.04),
    ]
}

# SE-BN-Inception's modules, in order: (name, 1x1, 3x3_reduce, 3x3, double3x3_reduce,
# double3x3, pool, pool_proj). A module with 1x1 == 0 is a grid reduction: its 3x3 and
# second double-3x3 stride 2, its pool is a 3x3/2 max pool, and it has no 1x1 or pool_proj.
INCEPTION_MODULES = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 0, 128, 160, 64, 96, "max", 0),
    ("4a", 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 0, 128, 192, 192, 256, "max", 0),
    ("5a", 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 352, 192, 320, 192, 224, "max", 128),
)

SE_REDUCTION = 16


def get_variant(name: str) -> Variant:
    """Look a variant up by its model name or constructor name; suggest close ones if unknown."""
    if isinstance(name, Variant):
        return name
    key = str(name).strip()
    if key in VARIANTS:
        return VARIANTS[key]
    by_other = {v.constructor.lower(): v for v in VARIANTS.values()}
    by_other.update({v.title.lower(): v for v in VARIANTS.values()})
    by_other.update({n.replace("_", "").replace("-", ""): v for n, v in VARIANTS.items()})
    for k in (key.lower(), key.lower().replace("_", "").replace("-", "")):
        if k in by_other:
            return by_other[k]
    close = difflib.get_close_matches(key.lower(), list(VARIANTS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown model name {name!r}.{hint} Available models: {', '.join(VARIANTS)}."
    )
