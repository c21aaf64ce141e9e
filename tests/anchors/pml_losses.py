"""pytorch-metric-learning (pml): the in-batch losses of labelled embeddings and the margin heads.

In-batch losses (`Layout::Embeddings`): pred is the embeddings `[N, D]`, target the i32 labels
`[N]`; each pml loss runs with its defaults (distance, reducer, all pairs of the batch).

Margin heads (`Layout::Heads`, src/stacked.rs `Stacked`): pred stacks the embeddings `[N, D]`
over the class weights `[C, D]` (one row per class: pml's `W` `[D, C]` transposed), `[N + C, D]`;
target is the i32 labels `[N]` in `[0, C)`; each case gives the layout's shape `[N, D, C]`. The
pml loss's `W` is set to the weight rows (transposed), and the gradient stacks the embeddings'
gradient over `W.grad` transposed.

triplet_batch_hard (anchored on Hermans et al. 2017) against pml's implementation of it, set to
the paper's form: BatchHardMiner, TripletMarginLoss over raw Lp distances (no normalisation)
and the mean over every mined triplet (MeanReducer; pml's default averages the non-zero ones).
The other metric entries' anchors name no pml loss.
"""

import numpy as np
import pytorch_metric_learning as pml
import pytorch_metric_learning.losses as pl
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BatchHardMiner
from pytorch_metric_learning.reducers import MeanReducer

from fixture import Fixture, f32, values

VERSIONS = f"torch {torch.__version__}, pytorch-metric-learning {pml.__version__}"

# Batch, width and classes of the in-batch losses; batch and classes of the heads.
N, D, LABELS = 10, 5, 3
HEAD_N, CLASSES = 8, 7
# Inputs are redrawn until every hinge lies this far from its kink.
KINK = 1e-3


def normalized(x):
    return torch.nn.functional.normalize(torch.tensor(x.astype(np.float64)), dim=1)


def batch_labels(fx):
    """Labels of N rows from LABELS classes, every class with at least two members."""
    while True:
        y = fx.labels(N, LABELS)
        if (np.bincount(y, minlength=LABELS) >= 2).all():
            return y


def in_batch(fx):
    for v, (pos, neg, gs) in enumerate([(0.0, 1.0, 1.0), (f32(0.2), f32(1.5), 2.0)]):
        while True:
            x, y = fx.uniform((N, D), -2, 2), batch_labels(fx)
            e = normalized(x)
            d = torch.cdist(e, e)
            same = torch.tensor(y[:, None] == y[None, :])
            margin = torch.where(same, torch.tensor(pos), torch.tensor(neg))
            off = ~torch.eye(N, dtype=torch.bool)
            hinge = torch.where(same, d - pos, neg - d)[off]
            if ((d - margin)[off].abs() > KINK).all() and (hinge < 0).any():
                break
        fx.case("contrastive_batch", v, "mean", x, y,
                lambda p, t: pl.ContrastiveLoss(pos_margin=pos, neg_margin=neg)(p, t), gs)
    for v, (temperature, gs) in enumerate([(f32(0.07), 1.0), (f32(0.5), 2.0)]):
        x, y = fx.uniform((N, D), -2, 2), batch_labels(fx)
        fx.case("nt_xent", v, "mean", x, y,
                lambda p, t: pl.NTXentLoss(temperature=temperature)(p, t), gs)
    for v, (temperature, gs) in enumerate([(f32(0.1), 1.0), (f32(0.5), 0.5)]):
        x, y = fx.uniform((N, D), -2, 2), batch_labels(fx)
        # One anchor without a positive (label 3, alone): pml's AvgNonZeroReducer leaves it out.
        y[-1] = LABELS
        fx.case("supcon", v, "mean", x, y,
                lambda p, t: pl.SupConLoss(temperature=temperature)(p, t), gs)


def batch_hard(fx):
    """Every anchor has a positive and a negative, so the mean over mined triplets is wgloss's
    mean over anchors; each anchor's hardest positive and negative are unique by a margin, and
    no hinge is near its kink."""
    for v, (margin, squared) in enumerate([(1.0, False), (f32(0.3), True)]):
        while True:
            x, y = fx.uniform((N, D), -2, 2), batch_labels(fx)
            e = torch.tensor(x.astype(np.float64))
            d = torch.cdist(e, e) ** (2 if squared else 1)
            same = torch.tensor(y[:, None] == y[None, :])
            off = ~torch.eye(N, dtype=torch.bool)
            pos = torch.where(same & off, d, -np.inf).sort(1, descending=True).values
            neg = torch.where(~same, d, np.inf).sort(1).values
            hinge = pos[:, 0] - neg[:, 0] + margin
            unique = ((pos[:, 0] - pos[:, 1]) > KINK).all() and ((neg[:, 1] - neg[:, 0]) > KINK).all()
            if unique and (hinge.abs() > KINK).all() and (hinge < 0).any():
                break

        def fn(p, t, margin=margin, squared=squared):
            dist = LpDistance(normalize_embeddings=False, power=2 if squared else 1)
            triplets = BatchHardMiner(distance=dist)(p, t)
            loss = pl.TripletMarginLoss(margin=margin, distance=dist, reducer=MeanReducer())
            return loss(p, t, triplets)

        fx.case("triplet_batch_hard", v, "mean", x, y, fn)


def head_case(fx, entry, variant, pred, labels, make, grad_scale):
    """One margin-head case: `make()` builds the pml loss, whose `W` gets the weight rows of the
    stacked `pred`; the gradient is d/demb over (d/dW)ᵀ, times grad_scale."""
    n = len(labels)
    emb = torch.tensor(pred[:n].astype(np.float64), requires_grad=True)
    head = make()
    head.W.data = torch.tensor(pred[n:].astype(np.float64)).t().contiguous()
    head.W.grad = None
    loss = head(emb, torch.tensor(labels))
    loss.backward()
    grad = torch.cat([emb.grad, head.W.grad.t()]) * grad_scale
    layout = "x".join(str(d) for d in (n, pred.shape[1], pred.shape[0] - n))
    fx.lines.append(f"case {entry} {variant} mean layout={layout}")
    fx.lines.append(values("pred", "f32", pred))
    fx.lines.append(values("target", "i32", labels))
    fx.lines.append(values("loss", "f64", loss.detach().numpy()))
    fx.lines.append(values("grad", "f64", grad.numpy()))


def head_inputs(fx):
    pred = fx.uniform((HEAD_N + CLASSES, D), -2, 2)
    labels = fx.labels(HEAD_N, CLASSES)
    return pred, labels


def target_angles(pred, labels):
    """θ of each embedding to its class's weight row."""
    e, w = normalized(pred[:HEAD_N]), normalized(pred[HEAD_N:])
    cos = (e * w[torch.tensor(labels)]).sum(1)
    return torch.acos(cos.clamp(-1, 1))


def heads(fx):
    for v, (scale, margin, gs) in enumerate([(64.0, f32(0.35), 1.0), (30.0, f32(0.2), 0.5)]):
        pred, labels = head_inputs(fx)
        head_case(fx, "cosface", v, pred, labels,
                  lambda: pl.CosFaceLoss(CLASSES, D, margin=margin, scale=scale), gs)
    # pml's ArcFaceLoss takes its margin in degrees (np.radians in init_margin): the margin is
    # set afterwards to the float32 radians wgloss holds.
    for v, (scale, margin, gs) in enumerate([(64.0, f32(0.5), 1.0), (16.0, f32(1.2), 2.0)]):
        while True:
            pred, labels = head_inputs(fx)
            theta = target_angles(pred, labels)
            past = theta > np.pi - margin
            if ((theta - (np.pi - margin)).abs() > KINK).all() and (v == 0 or past.any()):
                break

        def arcface():
            head = pl.ArcFaceLoss(CLASSES, D, scale=scale)
            head.margin = margin
            return head

        head_case(fx, "arcface", v, pred, labels, arcface, gs)
    for v, (margin, gs) in enumerate([(4, 1.0), (3, 2.0)]):
        pred, labels = head_inputs(fx)
        head_case(fx, "sphereface", v, pred, labels,
                  lambda: pl.SphereFaceLoss(CLASSES, D, margin=margin), gs)


def write():
    fx = Fixture("pml", 4, VERSIONS)
    in_batch(fx)
    heads(fx)
    batch_hard(fx)
    fx.write()
