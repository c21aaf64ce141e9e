"""kornia: ssim (`kornia.losses.ssim_loss`) and softmax_focal (`kornia.losses.focal_loss`)."""

import kornia
import numpy as np
import torch
from kornia.losses import focal_loss, ssim_loss

from fixture import IGNORE, Fixture, f32

VERSIONS = f"torch {torch.__version__}, kornia {kornia.__version__}"


def ssim(fx):
    # SSIM_VARIANTS: (window, padding, max_val, grad_scale); kornia fixes sigma 1.5, k1 0.01,
    # k2 0.03, and eps is wgloss's default 1e-12 (the registry's reference takes it as the f64
    # 1e-12, kornia's default). Images [1, 2, 9, 8] (the layout's [N, 2, 13, 11] made smaller
    # to keep the file short; reflect padding needs H, W > window // 2).
    variants = [(11, "same", 1.0, 1.0), (5, "valid", 1.0, 1.0), (3, "same", f32(2.0), 0.5)]
    for reduction in ("none", "mean", "sum"):
        for v, (window, padding, max_val, gs) in enumerate(variants):
            p = fx.uniform((1, 2, 9, 8), 0, 1)
            # Targets near the predictions in one channel (SSIM near 1), independent in the other.
            t = fx.uniform((1, 2, 9, 8), 0, 1)
            t[:, 0] = np.clip(p[:, 0] + fx.uniform((1, 9, 8), -0.1, 0.1), 0, 1)
            fx.case("ssim", v, reduction, p, t,
                    lambda p, t: ssim_loss(p, t, window, max_val=max_val, eps=1e-12,
                                           reduction=reduction, padding=padding), gs)


def softmax_focal(fx):
    # Variants (gamma, alpha, grad_scale): (2, None, 1), (0.5, per-class, 1), (0, None, 2);
    # ignore_index -100. wgloss's per-class alpha α_y is kornia's `weight` (which multiplies
    # the slice of class c; only the label's slice is nonzero), with kornia's scalar `alpha`
    # (1 − α for class 0, α for the others) off.
    alpha = [f32(a) for a in (0.25, 1.0, 0.5, 2.0, 0.75, 1.0, 0.1)]
    variants = [(2.0, None, 1.0), (0.5, alpha, 1.0), (0.0, None, 2.0)]
    # Reduction `none`: kornia returns the [N, C, d...] map (zero off the label's slice), wgloss
    # one loss per row [N, d...]: the map's sum over the classes.
    # Reduction `mean` is left out: kornia divides the map's sum by its every element, C times
    # the row count with ignored rows included, while wgloss's mean is over the non-ignored rows
    # (README, Conventions: "softmax_focal's is over non-ignored rows").
    for reduction in ("none", "sum"):
        for v, (gamma, a, gs) in enumerate(variants):
            weight = None if a is None else torch.tensor(a)
            for shape in [(4, 7, 2), (3, 7)]:
                x = fx.uniform(shape, -4, 4)
                y = fx.rng.integers(0, 7, size=(shape[0],) + shape[2:])
                y[fx.rng.uniform(0, 1, size=y.shape) < 0.2] = IGNORE
                y = y.astype(np.int64)

                def fn(x, y):
                    loss = focal_loss(x, y, alpha=None, gamma=gamma, reduction=reduction,
                                      weight=weight, ignore_index=IGNORE)
                    return loss.sum(dim=1) if reduction == "none" else loss

                fx.case("softmax_focal", v, reduction, x, y, fn, gs)


def write():
    fx = Fixture("kornia", 4, VERSIONS)
    ssim(fx)
    softmax_focal(fx)
    fx.write()
