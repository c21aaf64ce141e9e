"""torch: the metric-learning losses of explicit pairs and triplets.

The registry stacks a loss's inputs `[N, D]` along the rows into one prediction (`Layout::Tuples`,
src/stacked.rs): `[x1; x2]` `[2N, D]` for the pair losses, `[anchor; positive; negative]`
`[3N, D]` for triplet; the target is one i32 label per row `[N]` (not read by triplet), and the
gradient is stacked as the prediction is. Each case gives the layout's shape `[N, D]`.
"""

import numpy as np
import torch
import torch.nn.functional as F

from fixture import REDUCTIONS, Fixture, f32

VERSIONS = f"torch {torch.__version__}"

# Rows per input and their width.
N, D = 8, 4
# Inputs are redrawn until every hinge lies this far from its kink (where float32 and float64
# may take different branches).
KINK = 1e-3


def reduce(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def split(p, k):
    """The k inputs `[N, D]` of a stacked prediction `[k·N, D]`."""
    return p.reshape(k, -1, p.shape[1]).unbind(0)


def as64(*xs):
    return [torch.tensor(x.astype(np.float64)) for x in xs]


def cosine_embedding(fx):
    """torch cosine_embedding_loss; target ±1."""
    for reduction in REDUCTIONS:
        for v, (margin, gs) in enumerate([(0.0, 1.0), (f32(0.5), 2.0)]):
            while True:
                x = fx.uniform((2 * N, D), -2, 2)
                y = (2 * fx.rng.integers(0, 2, size=N) - 1).astype(np.int64)
                x1, x2 = as64(*np.split(x, 2))
                cos = F.cosine_similarity(x1, x2, dim=1, eps=0.0)
                # Dissimilar pairs on both sides of the margin, and similar pairs.
                neg = cos[torch.tensor(y == -1)]
                sides = (neg > margin).any() and (neg < margin).any() and (y == 1).any()
                if ((cos - margin).abs() > KINK).all() and sides:
                    break
            fx.case("cosine_embedding", v, reduction, x, y,
                    lambda p, t: F.cosine_embedding_loss(
                        *split(p, 2), t, margin=margin, reduction=reduction), gs,
                    layout=(N, D))


def contrastive(fx):
    """The registry's anchor is the formula (Hadsell et al. 2006, no library has it) the
    catalogue gives: ½[y·D² + (1 − y)·max(0, m − D)²], D = ‖x1 − x2‖₂ (no eps: not torch's
    pairwise_distance), y = 1 for a similar pair; evaluated here with torch ops and autograd."""

    def loss(p, t, margin, reduction):
        x1, x2 = split(p, 2)
        d = torch.linalg.vector_norm(x1 - x2, dim=1)
        y = t.to(p.dtype)
        return reduce(0.5 * (y * d**2 + (1 - y) * F.relu(margin - d) ** 2), reduction)

    for reduction in REDUCTIONS:
        for v, (margin, gs) in enumerate([(1.0, 1.0), (2.5, 0.5)]):
            while True:
                # Second rows near the first (scaled offsets), so that distances straddle the
                # margins.
                x1 = fx.uniform((N, D), -2, 2)
                x2 = x1 + fx.uniform((N, D), -1, 1) * fx.uniform((N, 1), 0.2, 1.5)
                x = np.concatenate([x1, x2]).astype(np.float32)
                y = fx.rng.integers(0, 2, size=N).astype(np.int64)
                a, b = as64(*np.split(x, 2))
                d = torch.linalg.vector_norm(a - b, dim=1)
                neg = torch.tensor(y == 0)
                active = neg & (d < margin)
                if ((d - margin).abs() > KINK).all() and active.any() and (neg & ~active).any():
                    break
            fx.case("contrastive", v, reduction, x, y,
                    lambda p, t: loss(p, t, margin, reduction), gs, layout=(N, D))


def triplet(fx):
    """torch triplet_margin_loss; the target is not read (labels 0 or 1, as the registry
    draws them)."""
    variants = [
        (1.0, 2.0, f32(1e-6), False),
        (0.5, 1.0, f32(1e-6), True),
        (1.0, 3.0, f32(0.1), True),
    ]
    for reduction in REDUCTIONS:
        for v, (margin, p, eps, swap) in enumerate(variants):
            while True:
                x = fx.uniform((3 * N, D), -2, 2)
                a, po, ne = as64(*np.split(x, 3))
                d_ap = F.pairwise_distance(a, po, p=p, eps=eps)
                d_an = F.pairwise_distance(a, ne, p=p, eps=eps)
                d_pn = F.pairwise_distance(po, ne, p=p, eps=eps)
                d_neg = torch.minimum(d_an, d_pn) if swap else d_an
                hinge = margin + d_ap - d_neg
                ok = (hinge.abs() > KINK).all() and (hinge > 0).any() and (hinge < 0).any()
                if ok and (not swap or ((d_an - d_pn).abs() > KINK).all()):
                    break
            y = fx.rng.integers(0, 2, size=N).astype(np.int64)
            fx.case("triplet", v, reduction, x, y,
                    lambda q, t: F.triplet_margin_loss(
                        *split(q, 3), margin=margin, p=p, eps=eps, swap=swap,
                        reduction=reduction), layout=(N, D))


def write():
    fx = Fixture("torch_metric", 3, VERSIONS)
    cosine_embedding(fx)
    contrastive(fx)
    triplet(fx)
    fx.write()
