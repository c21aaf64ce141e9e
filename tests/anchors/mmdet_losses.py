"""mmdet: balanced_l1_loss, GHMC and siou_loss (neg_gamma false), from mmdet's own loss files.

mmdet's package import pulls in mmcv's compiled ops, which these losses do not use: the loss
modules are loaded on their own (`losses()`), with `mmcv.ops` stubbed out.
"""

import importlib
import importlib.machinery
import os
import sys
import types

import numpy as np
import torch
import torchvision.ops as tvo

from fixture import REDUCTIONS, Fixture, f32, in_float64

import mmcv  # noqa: E402  (before mmdet, whose import checks mmcv's version)

MMCV_VERSION = mmcv.__version__
VERSIONS = None


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class _StubOps:
    """Finds `mmcv.ops` and its submodules as empty stubs (compiled ops, unused here)."""

    def find_spec(self, name, path, target=None):
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def losses():
    """mmdet's balanced_l1_loss, ghm_loss and iou_loss modules."""
    global VERSIONS
    sys.meta_path.insert(0, _StubOps())
    # mmdet asserts an mmcv older than the one pip resolves; the losses need none of it.
    mmcv.__version__ = "2.1.0"
    import mmdet

    root = os.path.dirname(mmdet.__file__)
    for name, sub in [("mmdet.models", "models"), ("mmdet.models.losses", "models/losses")]:
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = package
    VERSIONS = f"mmdet {mmdet.__version__}, mmcv {MMCV_VERSION}, torch {torch.__version__}"
    return [importlib.import_module(f"mmdet.models.losses.{m}")
            for m in ("balanced_l1_loss", "ghm_loss", "iou_loss")]


def balanced_l1(fx, module):
    for reduction in REDUCTIONS:
        for v, (alpha, gamma, beta) in enumerate([(0.5, 1.5, 1.0), (0.25, 1.0, 0.5)]):
            p, t = fx.uniform(37, -3, 3), fx.uniform(37, -3, 3)
            fx.case("balanced_l1", v, reduction, p, t,
                    lambda p, t: module.balanced_l1_loss(
                        p, t, beta=beta, alpha=alpha, gamma=gamma, reduction=reduction))


def ghm_c(fx, module):
    """A fresh GHMC per case (the registry's first call), label weights all 1. mmdet's GHMC
    takes reductions none (the weighted per-element losses) and mean (their sum over the valid
    count plus float32's eps); sum here is the sum of mmdet's none (mmdet refuses reduction sum
    with its avg_factor)."""
    for reduction in REDUCTIONS:
        for v, (bins, momentum, gs) in enumerate([(10, 0.0, 1.0), (30, 0.75, 1.0), (7, 0.5, 0.5)]):
            while True:
                p = fx.uniform(37, -6, 6)
                t = (fx.uniform(37, 0, 1) < 0.5).astype(np.float32)
                g = np.abs(1 / (1 + np.exp(-p.astype(np.float64))) - t) * bins
                # Off the bin edges, where f32 and f64 may bin differently.
                if np.min(np.abs(g - np.round(g))) > 1e-4:
                    break

            def fn(p, t, bins=bins, momentum=momentum):
                mode = "mean" if reduction == "mean" else "none"
                loss = module.GHMC(bins=bins, momentum=f32(momentum), reduction=mode)
                # GHMC casts target and label weights to float32 (and the loss with them).
                out = in_float64(loss)(p, t, torch.ones_like(t))
                return out.sum() if reduction == "sum" else out

            fx.case("ghm_c", v, reduction, p, t, fn, gs)


def xyxy(boxes, fmt):
    return boxes if fmt == "xyxy" else tvo.box_convert(boxes, "cxcywh", "xyxy")


def siou(fx, module):
    from torch_losses import random_boxes

    for reduction in REDUCTIONS:
        for v, (fmt, eps, gs) in enumerate(
            [("xyxy", f32(1e-7), 1.0), ("cxcywh", f32(1e-7), 1.0), ("xyxy", f32(0.01), 2.0)]
        ):
            p, t = random_boxes(fx, 9)
            fx.case("siou", v, reduction, p, t,
                    lambda p, t: module.siou_loss(
                        xyxy(p, fmt), xyxy(t, fmt), eps=eps, neg_gamma=False,
                        reduction=reduction), gs)


def write():
    balanced, ghm, iou = losses()
    fx = Fixture("mmdet", 7, VERSIONS)
    balanced_l1(fx, balanced)
    ghm_c(fx, ghm)
    siou(fx, iou)
    fx.write()
