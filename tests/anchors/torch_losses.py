"""torch and torchvision: the element-wise, class-row and box losses."""

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.ops as tvo

from fixture import IGNORE, REDUCTIONS, Fixture, f32

VERSIONS = f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def regression(fx):
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


def classification(fx, tv):
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
            p = tv.uniform(37, -4, 4)
            t = (tv.uniform(37, 0, 1) < 0.5).astype(np.float32)
            tv.case("sigmoid_focal", v, reduction, p, t,
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
            # Class-probability targets (torch normalises nothing: rows summing to 1 here).
            x = fx.uniform((5, 7, 3), -4, 4)
            t = fx.uniform((5, 7, 3), 0, 1)
            t = (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
            fx.case("cross_entropy", v, reduction, x, t,
                    lambda x, t: F.cross_entropy(
                        x, t, weight=wt, label_smoothing=eps, reduction=reduction), gs,
                    probs=True)
        for v, (pp, margin, gs) in enumerate([(1, 1.0, 1.0), (2, 1.0, 1.0), (1, 0.5, 0.5)]):
            x = fx.uniform((9, 7), -4, 4)
            y = fx.labels(9, 7)
            wt = torch.tensor(weight) if v == 1 else None
            fx.case("multiclass_hinge", v, reduction, x, y,
                    lambda x, y: F.multi_margin_loss(
                        x, y, p=pp, margin=margin, weight=wt, reduction=reduction), gs)


def generative(fx):
    for reduction in REDUCTIONS:
        for v, (batchmean, log_target, gs) in enumerate(
            [(True, False, 1.0), (False, True, 1.0), (True, True, 0.5)]
        ):
            red = "batchmean" if reduction == "mean" and batchmean else reduction
            p, t = fx.uniform(23, -6, 0), fx.uniform(23, 0, 1)
            fx.case("kl_div", v, reduction, p, t,
                    lambda p, t: F.kl_div(p, t, reduction=red, log_target=log_target), gs)


def xyxy(boxes, fmt):
    return boxes if fmt == "xyxy" else tvo.box_convert(boxes, "cxcywh", "xyxy")


def iou_loss(p, t, reduction, eps):
    """1 - IoU as torchvision's IoU losses compute it (intersection over union + eps)."""
    inter, union = tvo._utils._loss_inter_union(p, t)
    loss = 1 - inter / (union + eps)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def boxes(fx):
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


def ctc(fx):
    """torch ctc_loss on the registry's stacked form: log_probs [T, N, C], targets padded to S
    labels, lengths as `stacked::ctc_lengths` implies. torch's backward returns exp(lp) minus
    the posterior, the gradient w.r.t. the logits of a log_softmax; wgloss returns the gradient
    w.r.t. log_probs as independent values (its documented convention), so the fixture takes
    exp(lp) back out of torch's, for the frames within each input length."""
    frames, n, classes, labels = 12, 8, 6, 4
    inputs = [frames - i % 3 for i in range(n)]
    targets = [(i // 4) % (labels + 1) if i % 4 == 3 else labels for i in range(n)]
    for reduction in REDUCTIONS:
        for v, (blank, zero_inf, gs) in enumerate([(0, False, 1.0), (5, True, 1.0), (0, False, 0.5)]):
            lp = fx.uniform((frames, n, classes), -6, 0)
            y = (1 + np.floor(fx.uniform((n, labels), 0, 1) * (classes - 2))).clip(1, classes - 2)
            y = y.astype(np.int64)
            if reduction == "mean":
                weight = [1 / (n * max(t, 1)) for t in targets]
            else:
                weight = [1.0] * n

            def fn(p, t, blank=blank, zero_inf=zero_inf, weight=weight):
                loss = F.ctc_loss(p, t, inputs, targets, blank=blank, reduction=reduction,
                                  zero_infinity=zero_inf)
                # Adds -exp(lp) w_n to the gradient (and nothing to the value).
                shift = torch.stack(
                    [weight[j] * torch.exp(p[: inputs[j], j, :]).sum() for j in range(n)]
                )
                if reduction != "none":
                    shift = shift.sum()
                return loss - shift + shift.detach()

            fx.case("ctc", v, reduction, lp, y, fn, gs)


def write():
    fx = Fixture("torch", 1, VERSIONS)
    tv = Fixture("torchvision", 2, VERSIONS)
    regression(fx)
    classification(fx, tv)
    generative(fx)
    boxes(tv)
    ctc(fx)
    fx.write()
    tv.write()
