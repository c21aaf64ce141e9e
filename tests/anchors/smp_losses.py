"""segmentation_models_pytorch: the overlap losses (dice, jaccard, tversky; combo with torch's
cross_entropy) and the Lovász losses (lovasz_softmax, lovasz_hinge), from smp's own loss
classes.

The registry's F4 layout: logits `[N, 5, 12]`, labels `[N, 12]` with some pixels labelled -100
(ignored), reduction mean only (the loss is a scalar). lovasz_hinge: logits `[N, 1, 6, 10]` and
0/1 masks of the same shape, no ignore index.
"""

import numpy as np
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.losses import DiceLoss, JaccardLoss, LovaszLoss, TverskyLoss

from fixture import IGNORE, Fixture, f32, in_float64

VERSIONS = f"torch {torch.__version__}, segmentation-models-pytorch {smp.__version__}"
CLASSES = 5
PIXELS = 12


def seg_labels(fx, n, classes=CLASSES, present=None):
    """Labels `[n, PIXELS]` drawn from `present` (all classes by default), one pixel in about
    eight ignored, at least one kept pixel per image."""
    present = list(range(classes)) if present is None else present
    y = fx.rng.choice(present, size=(n, PIXELS))
    ignored = fx.rng.uniform(0, 1, size=(n, PIXELS)) < 0.125
    ignored[:, 0] = False
    y[ignored] = IGNORE
    return y.astype(np.int64)


def per_image_overlap(loss_cls, **kwargs):
    """The overlap loss with statistics per image and class (wgloss `per_image`), from smp's own
    class: smp sums over batch and space per channel (dims (0, 2)), so the softmax probabilities
    and one-hot targets of the N images are laid side by side as N·C channels of one sample in
    smp's 'multilabel' mode (from_logits=False), ignored pixels marked with the ignore index in
    every channel. smp's score, absent-channel mask, mean over the N·C channels and Tversky's
    power of that mean then apply per (image, class) as wgloss defines them."""
    loss = loss_cls("multilabel", from_logits=False, ignore_index=IGNORE, **kwargs)

    def fn(x, y):
        n, c = x.shape[0], x.shape[1]
        p = x.log_softmax(dim=1).exp()  # as smp's from_logits multiclass path
        keep = (y != IGNORE).unsqueeze(1)
        onehot = torch.nn.functional.one_hot(torch.where(keep[:, 0], y, 0), c).movedim(-1, 1)
        t = torch.where(keep, onehot.to(p.dtype), float(IGNORE))
        return loss(p.reshape(1, n * c, -1), t.reshape(1, n * c, -1))

    return fn


def overlap(fx):
    # overlap_entry!: variants (smooth, per_image) = (0, false), (1, false), (0, true), eps 1e-7.
    eps = f32(1e-7)
    tversky = dict(alpha=f32(0.3), beta=f32(0.7), gamma=1.5)
    losses = [("dice", DiceLoss, {}), ("jaccard", JaccardLoss, {}), ("tversky", TverskyLoss, tversky)]
    for name, cls, extra in losses:
        for v, (smooth, per_image) in enumerate([(0.0, False), (1.0, False), (0.0, True)]):
            if name == "dice" and smooth != 0.0:
                # Left out: smp >= 0.4 computes Dice as Tversky(0.5, 0.5), score
                # (I + s) / max((P + T)/2 + s, eps), while wgloss keeps the catalogue's
                # (2I + s) / max(P + T + s, eps) (CATALOGUE.md, dice; crates/wgloss-ref/src/
                # segmentation.rs module docs). The two agree for s = 0 only.
                continue
            kwargs = dict(smooth=smooth, eps=eps, **extra)
            if per_image:
                fn = per_image_overlap(cls, **kwargs)
            else:
                fn = cls("multiclass", ignore_index=IGNORE, **kwargs)
            for n, present in [(2, None), (2, [0, 1, 3, 4])]:
                x = fx.uniform((n, CLASSES, PIXELS), -4, 4)
                y = seg_labels(fx, n, present=present)
                fx.case(name, v, "mean", x, y, fn)


def separated(errors, gap):
    """Whether sorted errors are at least `gap` apart (no ties, none that f32 could swap)."""
    e = np.sort(np.asarray(errors).reshape(-1))
    return e.size < 2 or np.min(np.diff(e)) > gap




def lovasz_softmax(fx):
    # Variants (per_image, grad_scale): (false, 1), (true, 1), (false, 0.5); ignore_index -100.
    # Continuous logits, so errors are never tied (the gradient at ties depends on the sort
    # order, which torch does not promise stable) nor within f32 rounding of one another.
    for v, (per_image, gs) in enumerate([(False, 1.0), (True, 1.0), (False, 0.5)]):
        loss = in_float64(LovaszLoss("multiclass", per_image=per_image, ignore_index=IGNORE))
        # smp's _flatten_probas reads a 3-D tensor as sigmoid output [B, H, W]: give it the
        # pixels as [N, C, 12, 1].
        fn = lambda x, y: loss(x.unsqueeze(-1), y.unsqueeze(-1))
        for n, present in [(2, None), (2, [0, 2, 3, 4])]:
            while True:
                x = fx.uniform((n, CLASSES, PIXELS), -3, 3)
                y = seg_labels(fx, n, present=present)
                p = torch.tensor(x.astype(np.float64)).softmax(1).numpy()
                keep = y != IGNORE
                if all(separated(np.abs((y == c) - p[:, c])[keep], 1e-5) for c in range(CLASSES)):
                    break
            fx.case("lovasz_softmax", v, "mean", x, y, fn, gs)


def lovasz_hinge(fx):
    # Variants (per_image, grad_scale): (true, 1), (false, 1), (true, 0.5); no ignore index.
    for v, (per_image, gs) in enumerate([(True, 1.0), (False, 1.0), (True, 0.5)]):
        loss = in_float64(LovaszLoss("binary", per_image=per_image))
        for n in (2, 2):
            while True:
                x = fx.uniform((n, 1, 6, 10), -3, 3)
                t = (fx.uniform((n, 1, 6, 10), 0, 1) < 0.5).astype(np.float32)
                e = 1 - x.astype(np.float64) * (2 * t - 1)
                # Off the hinge's kink (e = 0) and no errors within f32 rounding of each other.
                if np.min(np.abs(e)) > 1e-3 and separated(e, 1e-5):
                    break
            fx.case("lovasz_hinge", v, "mean", x, t, loss, gs)


def combo(fx):
    """combo's variant 0 (α 0.5, no class weights, no smoothing) as torch's cross_entropy plus
    smp's DiceLoss, each at half weight (variant 1's smoothing is where smp 0.6's Dice departs,
    see `overlap`)."""
    dice = DiceLoss("multiclass", ignore_index=IGNORE, smooth=0.0, eps=f32(1e-7))

    def fn(x, y):
        ce = torch.nn.functional.cross_entropy(x, y, ignore_index=IGNORE)
        return 0.5 * ce + 0.5 * dice(x, y)

    for n, present in [(2, None), (3, [0, 1, 2, 4])]:
        x = fx.uniform((n, CLASSES, PIXELS), -4, 4)
        y = seg_labels(fx, n, present=present)
        fx.case("combo", 0, "mean", x, y, fn)


def write():
    fx = Fixture("smp", 3, VERSIONS)
    overlap(fx)
    lovasz_softmax(fx)
    lovasz_hinge(fx)
    combo(fx)
    fx.write()
