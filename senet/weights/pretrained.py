"""weights="imagenet": fetch the published file once, convert it once, cache the result."""

from __future__ import annotations

from senet.weights import hub, native


def imagenet_weights(variant) -> tuple[str, tuple[dict, dict]]:
    """(path, (weights, meta)) of the converted ImageNet weights of `variant`, cached.

    The download is verified against the published sha256 prefix; the converted file is
    verified against its own checksum on every load, and rebuilt if damaged.
    """
    from senet.weights.convert import convert

    if not variant.weights_url:
        raise ValueError(
            f"No downloadable ImageNet weights are published for {variant.title}: the official "
            "Caffe release is the only source. Download its .caffemodel, then run `senet convert "
            f"<file>.caffemodel --model {variant.name} --output {variant.name}.weights.h5` and "
            f"pass weights='{variant.name}.weights.h5'.")
    target = hub.cached_path(f"converted/{variant.name}-{variant.weights_sha256}.weights.h5")
    loaded = {}

    def build(tmp):
        src = hub.fetch(variant.weights_url, variant.weights_sha256, model_name=variant.name)
        convert(src, variant.name, tmp, kind="torch")

    def validate(path):
        try:
            loaded["weights"] = native.read(path)
        except native.WeightsFileError:
            return False
        return True

    path = hub.ensure_cached(target, build, validate)
    return str(path), loaded["weights"]
