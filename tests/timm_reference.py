"""timm as the reference for every SE architecture (test helper).

`timm_model(variant)` is timm's model of a table row (`timm.create_model`) or of a tiny row of
the modern family (timm's `ResNet` class with the same stem, widths, groups, shortcut and
anti-aliasing). Random init is not enough: with BatchNorm statistics that do not match the
activations, deep nets blow up or collapse. `randomize` first sets every BatchNorm's running
statistics to the real statistics of a calibration batch, then perturbs them and the affine
parameters randomly, and keeps residual branches small, so the net is well scaled, its
outputs depend on its input, and no parameter is a default value.
"""

from __future__ import annotations

import numpy as np

from senet.variants import VARIANTS, Variant

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
TIMM_NAMES = {v.name: v.timm for v in VARIANTS.values() if v.timm}


def rgb_images(n=2, size=224, seed=0):
    """Photo-like RGB uint8-range images: smooth colour fields plus noise, NHWC float32.

    `size` is an int or (height, width).
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8, 3))
    reps = -(-max(h, w) // 8)
    smooth = np.kron(coarse, np.ones((1, reps, reps, 1)))[:, :h, :w]
    return np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype("float32")


def to_timm_input(rgb):
    """timm's preprocessing of RGB 0-255 images: /255, mean/std, NCHW."""
    import torch

    return torch.from_numpy(((rgb / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype("float32"))


def timm_model(variant: Variant | str, num_classes=1000):
    """timm's model of `variant` (a table row or a tiny modern-family row), random init."""
    import timm
    import torch
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    v = VARIANTS[variant] if isinstance(variant, str) else variant
    if v.name in VARIANTS:
        return timm.create_model(v.timm, pretrained=False, num_classes=num_classes)
    if v.legacy:
        raise ValueError("timm's legacy SENet class has fixed widths; use a table row")
    expansion = 1 if v.block == "basic" else 4
    planes = v.widths[-1] // expansion
    kw = dict(block=BasicBlock if v.block == "basic" else Bottleneck, layers=v.depths,
              channels=tuple(planes * 2**i for i in range(4)), num_classes=num_classes,
              block_args=dict(attn_layer="se"), avg_down=v.shortcut == "avg",
              down_kernel_size=v.proj_kernel)
    if v.block != "basic":
        kw.update(cardinality=v.groups, base_width=v.widths[1] * 64 // (planes * v.groups),
                  block_reduce_first=v.widths[1] // v.widths[0])
    if len(v.stem) == 3:
        kw.update(stem_width=v.stem[1], stem_type="deep" if v.stem[0] == v.stem[1] else "deep_tiered")
    if v.anti_alias:
        kw["aa_layer"] = torch.nn.AvgPool2d
    return ResNet(**kw)


def _last_of_branch(model, name):
    """Whether BatchNorm `name` is the last one of a residual branch (bn2 of a basic block,
    bn3 of a bottleneck), whose scale decides how much a branch adds."""
    parent_name, _, leaf = name.rpartition(".")
    if not (leaf.startswith("bn") and leaf[2:].isdigit()) or not parent_name:
        return False
    parent = model.get_submodule(parent_name)
    has_se = hasattr(parent, "se") or hasattr(parent, "se_module")
    return has_se and not hasattr(parent, f"bn{int(leaf[2:]) + 1}")


def randomize(model, seed=0, calibration_size=96):
    """Calibrated, randomized BatchNorms and a scaled head (see the module docstring)."""
    import torch

    torch.manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0  # running stats := statistics of the calibration batch
    model.train()
    with torch.no_grad():
        model(to_timm_input(rgb_images(4, calibration_size, seed=seed + 100)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                lo, hi = (0.05, 0.2) if _last_of_branch(model, name) else (0.5, 1.0)
                m.weight.uniform_(lo, hi, generator=g)
                m.bias.normal_(0, 0.05, generator=g)
                std = m.running_var.clamp_min(1e-3).sqrt()
                m.running_mean.add_(0.1 * std * torch.randn(c, generator=g))
                m.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=g))
                m.momentum = 0.1
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.05, generator=g)
        head = model.get_classifier()
        head.weight.mul_(5.0)
        head.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def random_timm_model(variant, seed=0, num_classes=1000):
    """The same model for the same seed in every run (timm's init draws from torch's RNG)."""
    import torch

    torch.manual_seed(seed)
    return randomize(timm_model(variant, num_classes), seed)


def save(model, path, fmt):
    """Write `model`'s state dict as 'zip' or 'legacy' (torch.save) or 'safetensors'."""
    import torch

    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def timm_logits(model, rgb):
    import torch

    with torch.no_grad():
        return model(to_timm_input(rgb)).numpy()


def timm_features(model, rgb):
    """timm's stride-4/8/16/32 stage outputs, NHWC."""
    import torch

    with torch.no_grad():
        x = to_timm_input(rgb)
        if hasattr(model, "layer0"):  # the legacy SENet class
            x = model.layer0(x)
        else:
            x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        out = []
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
            out.append(x.numpy().transpose(0, 2, 3, 1))
        return out
