"""The one table of SE architectures: how each network is built, nothing about its weights.

Two families share one builder (`senet.models`):
- the 2017 family: the official Caffe release (SE-BN-Inception, SE-ResNet-50/101/152,
  SE-ResNeXt-50/101, SENet-154) and timm's three extra nets in the same layout (timm's
  `legacy_*` models): Caffe's ceil-mode max pool, stride on the first 1x1 conv of SE-ResNet,
  SE width C // 16;
- timm's modern SE-ResNet(-D) / SE-ResNeXt(-D) family (timm's `ResNet` class): padded max pool
  (or a 2x2 average pool in the anti-aliased nets), stride on the 3x3, deep / tiered stems,
  average-pool shortcuts ("D"), anti-aliased strides ("aa": stride-1 3x3 then a 2x2/2 average
  pool), SE width C / 16 rounded to a multiple of 8.
Pretrained weights are in `senet.catalogue`. Layer names are the official Caffe ones for every
net (`layer_names` gives them), so one converter per source layout serves the whole table.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from senet.errors import ArgumentError

# Official Caffe ImageNet evaluation: BGR, 0-255, minus this mean, no std.
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
DEFAULT_SIZE = 224  # the ImageNet input of the 2017 weights
MIN_SIZE = 32  # the smallest input side: stride 32 leaves one pixel
SE_REDUCTION = 16


@dataclass(frozen=True)
class Variant:
    name: str  # the `create_model` name, timm-style
    title: str  # the name in the paper or in timm
    family: str = "resnet"  # "resnet" (residual stages) or "inception" (SE-BN-Inception)
    constructor: str | None = None  # Keras-style constructor ("SEResNet50"), 2017 family only
    depths: tuple = ()  # blocks per stage (conv2..conv5)
    block: str = "bottleneck"  # "bottleneck" or "basic"
    widths: tuple = ()  # stage-2 widths: bottleneck (reduce, 3x3, out); basic (3x3, 3x3)
    groups: int = 1  # cardinality of the 3x3 conv
    stride_on: str = "3x3"  # the conv of a stage's first unit that strides: "1x1" (Caffe SE-ResNet) or "3x3"
    stem: tuple = (64,)  # (64,): one 7x7/2 conv; three widths: a deep stem of three 3x3 convs, the first /2
    stem_pool: str = "pad"  # "ceil" (Caffe: no padding, rounds up), "pad" (3x3/2, pad 1), "avg" (2x2/2 average)
    shortcut: str = "conv"  # projection: "conv" (strided conv) or "avg" (2x2/2 average pool, then 1x1 conv)
    proj_kernel: int = 1  # kernel of the strided projection convs (SENet-154: 3; stride-1 ones are 1x1)
    anti_alias: bool = False  # strided 3x3 -> stride-1 3x3 + 2x2/2 average pool
    se_round: int = 8  # SE width: C / 16 rounded to a multiple of this (1: C // 16, the 2017 nets)
    relu_before_se: bool = False  # basic blocks: a ReLU after the second BN, before SE (timm legacy)
    dropout: float = 0.0  # before the classifier
    timm: str | None = None  # timm's model of the same architecture (reference and speed peer)
    prototxt: str | None = None  # official deploy definition, if the variant is official
    params: int | None = None  # trainable parameters with the 1000-class head (= official / timm)
    macs: int | None = None  # multiply-adds per 224 px image, convs and dense (senet.bench.macs)
    top1_err: float | None = None  # the paper's single-crop top-1 error (%), official nets
    top5_err: float | None = None

    @property
    def legacy(self) -> bool:
        """The 2017 layout (timm's `legacy_*` models and the Caffe release)."""
        return self.stem_pool == "ceil"

    def se_width(self, channels: int) -> int:
        """Channels of the SE bottleneck for a branch of `channels`."""
        if self.se_round == 1:
            return channels // SE_REDUCTION
        v = channels / SE_REDUCTION  # timm's make_divisible(v, 8, round_limit=0)
        return max(self.se_round, int(v + self.se_round / 2) // self.se_round * self.se_round)

    def stage_widths(self, i: int) -> tuple:
        return tuple(w * 2**i for w in self.widths)


def _legacy(**kw):
    """The 2017 layout's defaults (Caffe / timm legacy)."""
    return dict(stem_pool="ceil", se_round=1, relu_before_se=True, **kw)


_R50, _R101, _R152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
_DEEP32, _TIERED32, _DEEP64 = (32, 32, 64), (24, 32, 64), (64, 64, 128)
_X4, _X8 = (128, 128, 256), (256, 256, 256)  # 32x4d; 32x8d and 64x4d

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # ------------------------------------------------------------ the 2017 family
        Variant("se_resnet18", "SE-ResNet-18", constructor="SEResNet18", depths=(2, 2, 2, 2),
                block="basic", widths=(64, 64), params=11_778_592, macs=1_814_160_384,
                timm="legacy_seresnet18", **_legacy()),
        Variant("se_resnet34", "SE-ResNet-34", constructor="SEResNet34", depths=_R50,
                block="basic", widths=(64, 64), params=21_958_868, macs=3_663_918_592,
                timm="legacy_seresnet34", **_legacy()),
        Variant("se_resnet50", "SE-ResNet-50", constructor="SEResNet50", depths=_R50,
                widths=(64, 64, 256), stride_on="1x1", prototxt="SE-ResNet-50.prototxt",
                params=28_088_024, macs=3_860_488_192, top1_err=22.37, top5_err=6.36,
                timm="legacy_seresnet50", **_legacy()),
        Variant("se_resnet101", "SE-ResNet-101", constructor="SEResNet101", depths=_R101,
                widths=(64, 64, 256), stride_on="1x1", prototxt="SE-ResNet-101.prototxt",
                params=49_326_872, macs=7_574_937_600, top1_err=21.75, top5_err=5.72,
                timm="legacy_seresnet101", **_legacy()),
        Variant("se_resnet152", "SE-ResNet-152", constructor="SEResNet152", depths=_R152,
                widths=(64, 64, 256), stride_on="1x1", prototxt="SE-ResNet-152.prototxt",
                params=66_821_848, macs=11_288_993_792, top1_err=21.34, top5_err=5.54,
                timm="legacy_seresnet152", **_legacy()),
        Variant("se_resnext26_32x4d", "SE-ResNeXt-26 (32x4d)", constructor="SEResNeXt26",
                depths=(2, 2, 2, 2), widths=_X4, groups=32, params=16_790_280,
                macs=2_472_099_840, timm="legacy_seresnext26_32x4d", **_legacy()),
        Variant("se_resnext50_32x4d", "SE-ResNeXt-50 (32x4d)", constructor="SEResNeXt50",
                depths=_R50, widths=_X4, groups=32, prototxt="SE-ResNeXt-50.prototxt",
                params=27_559_896, macs=4_232_994_816, top1_err=20.97, top5_err=5.54,
                timm="legacy_seresnext50_32x4d", **_legacy()),
        Variant("se_resnext101_32x4d", "SE-ResNeXt-101 (32x4d)", constructor="SEResNeXt101",
                depths=_R101, widths=_X4, groups=32, prototxt="SE-ResNeXt-101.prototxt",
                params=48_955_416, macs=7_974_739_968, top1_err=19.81, top5_err=4.96,
                timm="legacy_seresnext101_32x4d", **_legacy()),
        Variant("senet154", "SENet-154", constructor="SENet154", depths=_R152,
                widths=(128, 256, 256), groups=64, stem=_DEEP64, proj_kernel=3, dropout=0.2,
                prototxt="SENet-154.prototxt", params=115_088_984, macs=20_688_363_520,
                top1_err=18.68, top5_err=4.47, timm="legacy_senet154", **_legacy()),
        Variant("se_bn_inception", "SE-BN-Inception", family="inception",
                constructor="SEBNInception", prototxt="SE-BN-Inception.prototxt",
                params=11_931_622, macs=2_033_239_424, top1_err=23.62, top5_err=7.04,
                **_legacy()),
        # ------------------------------------------------------------ timm's modern family
        Variant("seresnet50", "SE-ResNet-50 (timm)", depths=_R50, widths=(64, 64, 256),
                params=28_088_024, macs=4_091_699_200, timm="seresnet50"),
        Variant("seresnet152d", "SE-ResNet-152-D", depths=_R152, widths=(64, 64, 256),
                stem=_DEEP32, shortcut="avg", params=66_841_080, macs=11_759_845_376,
                timm="seresnet152d"),
        Variant("seresnext26d_32x4d", "SE-ResNeXt-26-D (32x4d)", depths=(2, 2, 2, 2),
                widths=_X4, groups=32, stem=_DEEP32, shortcut="avg", params=16_809_512,
                macs=2_711_740_416, timm="seresnext26d_32x4d"),
        Variant("seresnext26t_32x4d", "SE-ResNeXt-26-T (32x4d)", depths=(2, 2, 2, 2),
                widths=_X4, groups=32, stem=_TIERED32, shortcut="avg", params=16_806_976,
                macs=2_680_129_536, timm="seresnext26t_32x4d"),
        Variant("seresnext50_32x4d", "SE-ResNeXt-50 (32x4d, timm)", depths=_R50, widths=_X4,
                groups=32, params=27_559_896, macs=4_232_994_816, timm="seresnext50_32x4d"),
        Variant("seresnext101_32x4d", "SE-ResNeXt-101 (32x4d, timm)", depths=_R101,
                widths=_X4, groups=32, params=48_955_416, macs=7_974_739_968,
                timm="seresnext101_32x4d"),
        Variant("seresnext101_64x4d", "SE-ResNeXt-101 (64x4d)", depths=_R101, widths=_X8,
                groups=64, params=88_232_984, macs=15_465_013_248, timm="seresnext101_64x4d"),
        Variant("seresnext101_32x8d", "SE-ResNeXt-101 (32x8d)", depths=_R101, widths=_X8,
                groups=32, params=93_569_048, macs=16_418_758_656, timm="seresnext101_32x8d"),
        Variant("seresnext101d_32x8d", "SE-ResNeXt-101-D (32x8d)", depths=_R101, widths=_X8,
                groups=32, stem=_DEEP32, shortcut="avg", params=93_588_280,
                macs=16_658_399_232, timm="seresnext101d_32x8d"),
        Variant("seresnextaa101d_32x8d", "SE-ResNeXt-101-D (32x8d), anti-aliased",
                depths=_R101, widths=_X8, groups=32, stem=_DEEP32, stem_pool="avg",
                shortcut="avg", anti_alias=True, params=93_588_280, macs=17_178_624_000,
                timm="seresnextaa101d_32x8d"),
        Variant("seresnextaa201d_32x8d", "SE-ResNeXt-201-D (32x8d), anti-aliased",
                depths=(3, 24, 36, 4), widths=_X8, groups=32, stem=_DEEP64, stem_pool="avg",
                shortcut="avg", anti_alias=True, params=149_394_904, macs=34_276_270_080,
                timm="seresnextaa201d_32x8d"),
        Variant("gluon_senet154", "SENet-154 (Gluon, timm layout)", depths=_R152,
                widths=(128, 256, 256), groups=64, stem=_DEEP64, proj_kernel=3,
                params=115_088_984, macs=20_688_363_520, timm="senet154"),
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


# --------------------------------------------------------------------------- layer names

def keras_name(caffe_name: str) -> str:
    """The Keras layer name of an official Caffe layer name ('/' is not allowed in Keras)."""
    return caffe_name.replace("/", "_")


def stem_convs(variant: Variant) -> list[str]:
    """Caffe names of the stem convs (each followed by `<name>/bn`)."""
    if len(variant.stem) == 3:
        return ["conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3"]
    return ["conv1/7x7_s2"]


def unit_convs(variant: Variant) -> list[str]:
    """Suffixes of a residual unit's branch convs, in order."""
    return ["_3x3a", "_3x3b"] if variant.block == "basic" else ["_1x1_reduce", "_3x3", "_1x1_increase"]


def units(variant: Variant):
    """(stage index from 0, unit index from 0, Caffe prefix 'conv<stage>_<unit>') of every unit."""
    for s, depth in enumerate(variant.depths):
        for u in range(depth):
            yield s, u, f"conv{s + 2}_{u + 1}"


# --------------------------------------------------------------------------- lookup

def _aliases() -> dict:
    """Other spellings of each name: constructor, title, timm's model name, no separators."""
    out = {}
    for v in VARIANTS.values():
        for key in (v.constructor, v.title, v.name.replace("_", ""), v.timm):
            if key:
                out.setdefault(key.lower(), v)
    return out


def get_variant(name) -> Variant:
    """Look a variant up by its model name, constructor, title or timm's name.

    A `Variant` passes through unchanged (tests build small custom rows with
    `dataclasses.replace`). Unknown names raise `ArgumentError` with close suggestions.
    """
    if isinstance(name, Variant):
        return name
    key = str(name).strip()
    if key in VARIANTS:
        return VARIANTS[key]
    aliases = _aliases()
    if key.lower() in aliases:
        return aliases[key.lower()]
    close = difflib.get_close_matches(key.lower(), list(VARIANTS), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ArgumentError(f"Unknown model name {key!r}.{hint} `senet list` shows the "
                        f"{len(VARIANTS)} architectures.")


def tiny(name: str, **changes) -> Variant:
    """A small copy of a table row with the same block kinds (one unit per stage, narrow widths).

    For tests and quick experiments: every feature of the row (stem, pool, shortcut, anti-alias,
    SE rounding, groups) is kept, at a fraction of the compute.
    """
    v = get_variant(name)
    if v.family == "inception":
        raise ArgumentError("tiny() makes residual nets; SE-BN-Inception has no small form.")
    groups = min(v.groups, 4)
    widths = tuple(max(16, w // 8) for w in v.widths)  # 16 keeps a C // 16 SE width positive
    # timm's 7x7 stem is always 64 wide; its tiered stem needs (3w/4, w, 2w)
    stem = v.stem if len(v.stem) == 1 else tuple(max(4, w // 4) for w in v.stem)
    fields = dict(name=f"{v.name}_tiny", constructor=None, depths=(1, 1, 1, 1), widths=widths,
                  groups=groups, stem=stem, params=None, macs=None, prototxt=None)
    fields.update(changes)
    return dataclasses.replace(v, **fields)
