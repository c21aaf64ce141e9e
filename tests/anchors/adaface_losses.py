"""AdaFace's official head (`head.py` of github.com/mk-minchul/AdaFace), the anchor of adaface:
cross-entropy over the head's logits, the embeddings normalised and their norms taken as the
repository's backbones return them (`l2_norm(x)`, `‖x‖`). The registry's stacked form: pred
holds the embeddings [N, D] over the class weights [C, D] (the head's `kernel` [D, C]
transposed); the gradient stacks the embeddings' over the weights'. A fresh head per case (the
registry's first call). head.py is not a package: set ADAFACE_HEAD to its path."""

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

from fixture import Fixture, f32, values

PATH = os.environ.get("ADAFACE_HEAD")
if not PATH:
    raise ImportError("ADAFACE_HEAD is not set (the path of AdaFace's head.py)")
_spec = importlib.util.spec_from_file_location("adaface_head", PATH)
head_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(head_py)

VERSIONS = f"AdaFace head.py, torch {torch.__version__}"
N, D, C = 8, 5, 7


def case(fx, variant, pred, labels, config, grad_scale):
    margin, h, t_alpha = config
    p = torch.tensor(pred.astype(np.float64), requires_grad=True)
    emb, weight = p[:N], p[N:]
    head = head_py.AdaFace(embedding_size=D, classnum=C, m=margin, h=h, s=64.0, t_alpha=t_alpha)
    head = head.double()
    norms = torch.norm(emb, 2, 1, True)
    y = torch.tensor(labels)
    # The kernel as a function of pred, so that its gradient flows to the weight rows.
    del head.kernel
    head.kernel = weight.t()
    logits = head(emb / norms, norms, y)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    fx.lines.append(f"case adaface {variant} mean layout={N}x{D}x{C}")
    fx.lines.append(values("pred", "f32", pred))
    fx.lines.append(values("target", "i32", labels))
    fx.lines.append(values("loss", "f64", loss.detach().numpy()))
    fx.lines.append(values("grad", "f64", (p.grad * grad_scale).numpy()))


def write():
    fx = Fixture("adaface", 9, VERSIONS)
    # Variants: (m, h, t_alpha, grad_scale) = (0.4, 0.333, 0.01, 1), (0.5, 0.5, 1, 0.5).
    for v, (config, gs) in enumerate([
        ((f32(0.4), f32(0.333), f32(0.01)), 1.0),
        ((0.5, 0.5, 1.0), 0.5),
    ]):
        for _ in range(2):
            pred = fx.uniform((N + C, D), -2, 2)
            # Norms spread around the running statistics, so that margins of both signs and
            # the clip of a_i are all reached.
            pred[:N] *= np.linspace(0.5, 40, N, dtype=np.float32)[:, None]
            labels = fx.labels(N, C)
            case(fx, v, pred, labels, config, gs)
    fx.write()
