"""The `weights=` argument: what it names, what it implies, and its arrays.

`resolve` reads only what decides how the model is built (the catalogue entry, or a file's
header): its input convention, classes and preprocessing. `senet.models.build` builds the
model from that, then `load_into` fetches, converts and checks the arrays against the built
model, and only then caches the converted file. One build, one check, imports one way:
models -> weights.loader -> (catalogue, hub, sources, native); nothing here imports Keras.
"""

from __future__ import annotations

import dataclasses
import os

from senet import catalogue
from senet.errors import ArgumentError, WeightsFileError
from senet.imagenet import CLASS_SETS, CONVENTIONS
from senet.variants import Variant, get_variant
from senet.weights import hub, native, sources


@dataclasses.dataclass
class Resolved:
    """A `weights=` argument, understood: a catalogue entry or a file, and its metadata."""

    kind: str  # "catalogue", "senet" (the project's file) or "keras" (model.save_weights)
    meta: dict
    path: str | None = None
    entry: catalogue.Pretrained | None = None

    @property
    def classes(self) -> int | None:
        """The weights' classes; None without a classifier (or unknown: Keras files)."""
        return self.meta.get("classes") or None

    @property
    def label(self) -> str:
        return self.entry.key if self.entry else os.fspath(self.path)


def entry_meta(entry: catalogue.Pretrained) -> dict:
    """The metadata a model built with catalogue weights carries (`model.senet_weights`)."""
    return {
        "model": entry.arch, "tag": entry.key, "input": entry.input,
        "classes": CLASS_SETS[entry.classes], "class_set": entry.classes,
        "class_order": "sorted", "preprocessing": entry.preprocessing(),
        "source": {"kind": "catalogue", "hub": entry.hub, "file": entry.file, "url": entry.url,
                   "sha256": entry.sha256},
        "top1": entry.top1, "license": entry.license,
    }


def normalize(meta: dict, path) -> dict:
    """Fill in what files of older versions leave out; refuse what makes no sense."""
    meta = dict(meta)
    if meta.get("input") not in CONVENTIONS:
        raise WeightsFileError(f"{path}: unknown input convention {meta.get('input')!r} in its "
                               "metadata; convert the source file again.")
    classes = meta.get("classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 0:
        raise WeightsFileError(f"{path}: bad class count {classes!r} in its metadata.")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != classes
                              or not all(isinstance(n, str) for n in names)):
        raise WeightsFileError(f"{path}: its class names do not match its {classes} classes.")
    if names is None:
        meta.setdefault("class_set", next((s for s, n in CLASS_SETS.items() if n == classes), None))
        meta.setdefault("class_order", "sorted")
    return meta


def _looks_like_catalogue(weights: str) -> bool:
    """'arch.tag' of a known architecture that is not a file (so a mistyped tag gets suggestions)."""
    arch, tag = catalogue.split(weights)
    if tag is None or any(c in weights for c in "/\\") or os.path.exists(weights) \
            or tag.endswith(("h5", "pth", "pt", "bin", "safetensors", "caffemodel", "ckpt")):
        return False
    try:
        get_variant(arch)
    except ArgumentError:
        return False
    return True


def resolve(variant: Variant, weights) -> Resolved:
    """Understand `weights` ('imagenet', a tag, 'arch.tag', or a file path) for `variant`."""
    if isinstance(weights, str) and (weights == "imagenet" or weights in catalogue.CATALOGUE
                                     or weights in catalogue.TIMM_NAMES
                                     or f"{variant.name}.{weights}" in catalogue.CATALOGUE
                                     or _looks_like_catalogue(weights)):
        entry = catalogue.lookup(variant, weights)
        return Resolved("catalogue", entry_meta(entry), entry=entry)
    if not isinstance(weights, (str, os.PathLike)):
        raise ArgumentError(
            "`weights` must be None (random initialization), 'imagenet' (the default published "
            "weights), a tag such as 'seresnet50.a1_in1k', or the path of a weights file. "
            f"Received: weights={weights!r}")
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such weights file. Pass weights=None, 'imagenet', a "
                               "tag (`senet list --pretrained`), or a file written by "
                               "`senet convert`, `senet train` or `model.save_weights`.")
    doc = native.read_header(path)
    if doc is not None:
        meta = normalize(doc["meta"], path)
        kind = "senet"
    elif native.is_hdf5(path):
        legacy = native.read_legacy_meta(path)  # probes the file first
        kind, meta = ("keras", {}) if legacy is None else ("senet", normalize(legacy, path))
    else:
        kind = sources.detect(path)
        raise WeightsFileError(
            f"{path} is a {kind} file; convert it first: `senet convert {path} --model "
            f"{variant.name} --output {variant.name}.weights.h5` (add .TAG to --model for the "
            "preprocessing and classes of a catalogue entry).")
    if kind == "senet" and meta.get("model") != variant.name:
        raise WeightsFileError(
            f"{path} holds weights for {meta.get('model')}, not {variant.name}; build that model "
            f"(senet.create_model({meta.get('model')!r}, weights=...)) or convert a file for "
            f"{variant.name}.")
    return Resolved(kind, meta, path=path)


def _converted_path(entry) -> "os.PathLike":
    version = (entry.sha256 or entry.url_sha256 or "unpinned")[:12]
    return hub.cached_path(f"converted/{entry.key}-{version}.weights.h5")


def _from_catalogue(resolved: Resolved, variant: Variant, progress=True):
    """(arrays, commit) of a catalogue entry: from the converted cache, else fetched and mapped.

    `commit()` writes the converted file to the cache; call it once the arrays fit the model.
    """
    entry = resolved.entry
    target = _converted_path(entry)
    if target.exists():
        try:
            weights, meta = native.read(target)
            if meta.get("tag") == entry.key:
                return weights, None
        except WeightsFileError:
            pass  # damaged: rebuilt below
    src = hub.fetch(entry, progress=progress)
    weights, _ = sources.read(src, variant, kind=sources.detect(src), layout=entry.layout)

    def commit():
        def build(tmp):
            native.save(tmp, weights, resolved.meta)

        def valid(path):
            return native.read(path, checksum_only=True)[1].get("tag") == entry.key

        hub.ensure_cached(target, build, valid)

    return weights, commit


def load_into(model, resolved: Resolved, variant: Variant, new_head=False) -> None:
    """Set `model`'s weights from `resolved` (built for it). `new_head`: keep the classifier's
    fresh weights (fine-tuning to other classes)."""
    if resolved.kind == "keras":
        try:
            model.load_weights(resolved.path)
        except (ValueError, KeyError, OSError, TypeError) as err:
            raise WeightsFileError(f"{resolved.path}: cannot load it into {model.name} "
                                   f"({' '.join(str(err).split())[:300]}).") from None
        return
    commit = None
    if resolved.kind == "catalogue":
        weights, commit = _from_catalogue(resolved, variant)
    else:
        weights, _ = sources.read_native(resolved.path)
    skip = ("classifier",) if new_head else ()
    native.apply(model, weights, resolved.label, skip=skip)
    if commit is not None:
        commit()
