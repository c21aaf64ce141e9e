"""Writes the anchor fixtures: each loss's value and gradient as its anchor library computes
them (in float64), on inputs drawn here, for tests/anchors.rs to hold the reference and the
GPU kernels to.

    python3 tests/anchors/generate.py    # needs torch and torchvision

Inputs are float32 values (exact on upload), the anchors evaluate them in float64. A case is
one registry entry, one of its variants (by index, see src/registry.rs) and one reduction;
under `none` the gradient is that of the sum of the per-term losses. Every gradient is
multiplied by the variant's grad_scale, as wgloss's configs do. Hyperparameters are passed as
the float32 values wgloss's configs hold (`f32`).
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.ops as tvo

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
REDUCTIONS = ("none", "mean", "sum")
IGNORE = -100


class Fixture:
    """The cases of one file."""

    def __init__(self, name, seed):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.lines = [
            f"# {name}: written by tests/anchors/generate.py (torch {torch.__version__})"
        ]

    def uniform(self, shape, lo, hi):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)

    def labels(self, shape, classes, ignore_every=0):
        y = self.rng.integers(0, classes, size=shape)
        if ignore_every:
            flat = y.reshape(-1)
            flat[:: ignore_every] = IGNORE
        return y.astype(np.int64)

    def case(self, entry, variant, reduction, pred, target, fn, grad_scale=1.0):
        """Evaluates `fn(pred, target) -> loss` in float64 with autograd on pred."""
        p = torch.tensor(pred.astype(np.float64), requires_grad=True)
        labels = target.dtype.kind == "i"
        t = torch.tensor(target) if labels else torch.tensor(target.astype(np.float64))
        loss = fn(p, t)
        loss.sum().backward()
        grad = p.grad * grad_scale
        kind = "i32" if labels else "f32"
        self.lines.append(f"case {entry} {variant} {reduction}")
        self.lines.append(values("pred", "f32", pred))
        self.lines.append(values("target", kind, target))
        self.lines.append(values("loss", "f64", loss.detach().numpy()))
        self.lines.append(values("grad", "f64", grad.numpy()))

    def write(self):
        path = os.path.join(HERE, f"{self.name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print(f"wrote {path} ({sum(l.startswith('case') for l in self.lines)} cases)")


def f32(x):
    """x as the float32 a wgloss config holds."""
    return float(np.float32(x))


def values(key, kind, a):
    a = np.asarray(a)
    shape = "x".join(str(d) for d in a.shape) or "scalar"
    if kind == "i32":
        body = " ".join(str(int(v)) for v in a.reshape(-1))
    elif kind == "f32":
        body = " ".join(repr(float(v)) for v in a.reshape(-1))
    else:
        body = " ".join(repr(float(v)) for v in np.asarray(a, dtype=np.float64).reshape(-1))
    return f"{key} {kind} {shape} {body}"


def regression():
    fx = Fixture("regression", 1)
    n = 37
    for reduction in REDUCTIONS:
        for v, gs in enumerate([1.0, 0.5]):
            p, t = fx.uniform(n, -3, 3), fx.uniform(n, -3, 3)
            fx.case("mae", v, reduction, p, t,
                    lambda p, t: F.l1_loss(p, t, reduction=reduction), gs)
        for v, gs in enumerate([1.0, 2.0]):
            p, t = fx.uniform(n, -3, 3), fx.uniform(n, -3, 3)
            fx.case("mse", v, reduction, p, t,
                    lambda p, t: F.mse_loss(p, t, reduction=reduction), gs)
        for v, (delta, gs) in enumerate([(1.0, 1.0), (0.5, 1.0), (2.5, 0.25)]):
            p, t = fx.uniform(n, -3, 3), fx.uniform(n, -3, 3)
            fx.case("huber", v, reduction, p, t,
                    lambda p, t: F.huber_loss(p, t, reduction=reduction, delta=delta), gs)
        for v, beta in enumerate([1.0, 0.0, f32(0.3)]):
            p, t = fx.uniform(n, -3, 3), fx.uniform(n, -3, 3)
            fx.case("smooth_l1", v, reduction, p, t,
                    lambda p, t: F.smooth_l1_loss(p, t, reduction=reduction, beta=beta))
    for v, gs in enumerate([1.0, 0.25]):
        p, t = fx.uniform(n, -3, 3), fx.uniform(n, -3, 3)
        fx.case("rmse", v, "mean", p, t, lambda p, t: torch.sqrt(F.mse_loss(p, t)), gs)
    fx.write()


def classification():
    fx = Fixture("classification", 2)
    for reduction in REDUCTIONS:
        pos = [None, [2.0, 0.5, 1.0], [3.0, 1.0, 0.25]]
        wts = [None, None, [0.5, 2.0, 1.0]]
        for v, gs in enumerate([1.0, 1.0, 0.5]):
            p, t = fx.uniform((12, 3), -4, 4), fx.uniform((12, 3), 0, 1)
            pw = None if pos[v] is None else torch.tensor(pos[v])
            w = None if wts[v] is None else torch.tensor(wts[v])
            fx.case("bce_with_logits", v, reduction, p, t,
                    lambda p, t: F.binary_cross_entropy_with_logits(
                        p, t, weight=w, pos_weight=pw, reduction=reduction), gs)
        for v, (alpha, gamma) in enumerate([(0.25, 2.0), (-1.0, 0.5), (0.75, 0.0)]):
            p = fx.uniform(37, -4, 4)
            t = (fx.uniform(37, 0, 1) < 0.5).astype(np.float32)
            fx.case("sigmoid_focal", v, reduction, p, t,
                    lambda p, t: tvo.sigmoid_focal_loss(
                        p, t, alpha=alpha, gamma=gamma, reduction=reduction))
        # torch cross_entropy: the registry's variants 0-3 (4 and 5 add z-loss and a soft
        # cap, which torch has not).
        weight = [0.5, 2.0, 1.0, 0.25, 1.5, 1.0, 3.0]
        for v, (w, eps, gs) in enumerate(
            [(None, 0.0, 1.0), (weight, 0.0, 1.0), (None, f32(0.1), 1.0), (weight, f32(0.2), 0.5)]
        ):
            x = fx.uniform((5, 7, 3), -4, 4)
            y = fx.labels((5, 3), 7, ignore_every=4)
            wt = None if w is None else torch.tensor(w)
            fx.case("cross_entropy", v, reduction, x, y,
                    lambda x, y: F.cross_entropy(
                        x, y, weight=wt, ignore_index=IGNORE, label_smoothing=eps,
                        reduction=reduction), gs)
        for v, (pp, margin, gs) in enumerate([(1, 1.0, 1.0), (2, 1.0, 1.0), (1, 0.5, 0.5)]):
            x = fx.uniform((9, 7), -4, 4)
            y = fx.labels(9, 7)
            wt = torch.tensor(weight) if v == 1 else None
            fx.case("multiclass_hinge", v, reduction, x, y,
                    lambda x, y: F.multi_margin_loss(
                        x, y, p=pp, margin=margin, weight=wt, reduction=reduction), gs)
    fx.write()


def generative():
    fx = Fixture("generative", 3)
    for reduction in REDUCTIONS:
        for v, (batchmean, log_target, gs) in enumerate(
            [(True, False, 1.0), (False, True, 1.0), (True, True, 0.5)]
        ):
            red = "batchmean" if reduction == "mean" and batchmean else reduction
            p, t = fx.uniform(23, -6, 0), fx.uniform(23, 0, 1)
            fx.case("kl_div", v, reduction, p, t,
                    lambda p, t: F.kl_div(p, t, reduction=red, log_target=log_target), gs)
    fx.write()


def xyxy(boxes, fmt):
    return boxes if fmt == "xyxy" else tvo.box_convert(boxes, "cxcywh", "xyxy")


def iou_loss(p, t, reduction, eps):
    """1 - IoU as torchvision's IoU losses compute it (intersection over union + eps)."""
    inter, union = tvo._utils._loss_inter_union(p, t)
    loss = 1 - inter / (union + eps)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def boxes():
    fx = Fixture("boxes", 4)
    losses = {
        "iou": iou_loss,
        "giou": lambda p, t, r, e: tvo.generalized_box_iou_loss(p, t, reduction=r, eps=e),
        "diou": lambda p, t, r, e: tvo.distance_box_iou_loss(p, t, reduction=r, eps=e),
        "ciou": lambda p, t, r, e: tvo.complete_box_iou_loss(p, t, reduction=r, eps=e),
    }
    for name, fn in losses.items():
        for reduction in REDUCTIONS:
            for v, (fmt, eps, gs) in enumerate(
                [("xyxy", f32(1e-7), 1.0), ("cxcywh", f32(1e-7), 1.0), ("xyxy", f32(0.01), 2.0)]
            ):
                p, t = random_boxes(fx, 9)
                fx.case(name, v, reduction, p, t,
                        lambda p, t: fn(xyxy(p, fmt), xyxy(t, fmt), reduction, eps), gs)
    fx.write()


def random_boxes(fx, n):
    """Target boxes (x1, y1, x2, y2) with positive coordinates, predictions overlapping them in
    three cases out of four (valid read as cxcywh too)."""
    pred, target = [], []
    for _ in range(n):
        u = fx.rng.uniform(0, 1, size=9)
        x, y, w, h = 8 * u[0], 8 * u[1], 0.2 + 3.8 * u[2], 0.2 + 3.8 * u[3]
        target.append([x, y, x + w, y + h])
        if u[4] < 0.75:
            cx, cy = x + w / 2 + (u[5] - 0.5) * w, y + h / 2 + (u[6] - 0.5) * h
            pw, ph = w * (0.5 + u[7]), h * (0.5 + u[8])
            px, py = cx - pw / 2, cy - ph / 2
        else:
            px, py, pw, ph = 8 * u[5], 8 * u[6], 0.2 + 3.8 * u[7], 0.2 + 3.8 * u[8]
        px, py = max(px, 0.05), max(py, 0.05)
        pred.append([px, py, px + pw, py + ph])
    return np.array(pred, dtype=np.float32), np.array(target, dtype=np.float32)


if __name__ == "__main__":
    regression()
    classification()
    generative()
    boxes()
