"""timm's legacy SENet models as the reference for the PyTorch-checkpoint converter (test helper).

Random init is not enough: with BatchNorm statistics that do not match the activations,
deep nets blow up or collapse. `random_timm_model` first sets every BatchNorm's running
statistics to the real statistics of a calibration batch, then perturbs them and the affine
parameters randomly, and keeps residual branches small, so the net is well scaled yet no
parameter is a default value.
"""

from __future__ import annotations

import numpy as np

from senet.variants import VARIANTS

TIMM_NAMES = {v.name: v.timm for v in VARIANTS.values() if v.timm}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def rgb_images(n=2, size=224, seed=0):
    """Photo-like RGB uint8-range images: smooth colour fields plus noise, NHWC float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8, 3))
    reps = -(-size // 8)
    smooth = np.kron(coarse, np.ones((1, reps, reps, 1)))[:, :size, :size]
    return np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype("float32")


def to_timm_input(rgb):
    """timm's preprocessing of RGB 0-255 images: /255, mean/std, NCHW."""
    import torch

    return torch.from_numpy(((rgb / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype("float32"))


def random_timm_model(name, seed=0):
    """A timm legacy SENet with calibrated, randomized BatchNorms, in eval mode."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0  # running stats := statistics of the calibration batch
    model.train()
    with torch.no_grad():
        model(to_timm_input(rgb_images(4, 96, seed=seed + 100)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name_, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                last_of_branch = name_.endswith(("bn3", "bn2")) and "layer0" not in name_ and (
                    name_.endswith("bn3") or hasattr(model.get_submodule(name_.rsplit(".", 1)[0]), "conv2")
                    and not hasattr(model.get_submodule(name_.rsplit(".", 1)[0]), "conv3"))
                lo, hi = (0.05, 0.2) if last_of_branch else (0.5, 1.0)
                m.weight.uniform_(lo, hi, generator=g)
                m.bias.normal_(0, 0.05, generator=g)
                std = m.running_var.clamp_min(1e-3).sqrt()
                m.running_mean.add_(0.1 * std * torch.randn(c, generator=g))
                m.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=g))
                m.momentum = 0.1
        model.last_linear.weight.mul_(5.0)
        model.last_linear.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def timm_logits(model, rgb):
    import torch

    with torch.no_grad():
        return model(to_timm_input(rgb)).numpy()
