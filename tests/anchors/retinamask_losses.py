"""RetinaMask's AdjustSmoothL1Loss (`maskrcnn_benchmark/layers/adjust_smooth_l1_loss.py` of
github.com/chengyangfu/retinamask), the anchor of self_adjusting_smooth_l1: a fresh loss per case
(the registry's first call: running mean β_max, running variance 0, then this batch's
statistics), features [N, 4]; reductions mean and sum (its size_average; it has no `none`). The
file is not a package: set RETINAMASK_LOSS to its path. It imports a torch module that torch no
longer has (`torch.distributed.deprecated`, unused by the loss): an empty stand-in is given."""

import importlib.util
import os
import sys
import types

import numpy as np
import torch

from fixture import Fixture, f32

PATH = os.environ.get("RETINAMASK_LOSS")
if not PATH:
    raise ImportError("RETINAMASK_LOSS is not set (the path of adjust_smooth_l1_loss.py)")
sys.modules.setdefault("torch.distributed.deprecated", types.ModuleType("deprecated"))
_spec = importlib.util.spec_from_file_location("adjust_smooth_l1_loss", PATH)
retinamask = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(retinamask)

VERSIONS = f"RetinaMask adjust_smooth_l1_loss.py, torch {torch.__version__}"


def write():
    fx = Fixture("retinamask", 10, VERSIONS)
    for reduction in ("mean", "sum"):
        for v, (beta_max, momentum) in enumerate([(f32(1 / 9), f32(0.1)), (0.5, 0.5)]):
            for _ in range(2):
                p, t = fx.uniform((16, 4), -0.1, 0.1), fx.uniform((16, 4), -0.1, 0.1)
                loss = retinamask.AdjustSmoothL1Loss(4, momentum=momentum, beta=beta_max).double()
                fx.case("self_adjusting_smooth_l1", v, reduction, p, t,
                        lambda p, t, loss=loss: loss(p, t, size_average=reduction == "mean"))
    fx.write()
