"""The fixture format and helpers shared by the anchor scripts (see generate.py)."""

import os

import numpy as np

try:
    import torch

    torch.set_default_dtype(torch.float64)
except ImportError:  # a module evaluating its anchor without torch (tf_addons_losses.py)
    torch = None
HERE = os.path.dirname(os.path.abspath(__file__))
REDUCTIONS = ("none", "mean", "sum")
IGNORE = -100


class Fixture:
    """The cases of one file."""

    def __init__(self, name, seed, versions):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.lines = [f"# {name}: written by tests/anchors/generate.py ({versions})"]

    def uniform(self, shape, lo, hi):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)

    def labels(self, shape, classes, ignore_every=0):
        y = self.rng.integers(0, classes, size=shape)
        if ignore_every:
            flat = y.reshape(-1)
            flat[:: ignore_every] = IGNORE
        return y.astype(np.int64)

    def case(self, entry, variant, reduction, pred, target, fn, grad_scale=1.0, layout=None,
             probs=False):
        """Evaluates `fn(pred, target) -> loss` in float64 with autograd on pred. `layout`: the
        shape the entry's layout takes (`Entry::inputs_shaped` in src/registry.rs) where it is
        not pred's own, as for inputs stacked into one pred (clouds, tuples, heads). `probs`:
        probability targets of pred's shape where the layout has labels (cross-entropy)."""
        p = torch.tensor(pred.astype(np.float64), requires_grad=True)
        labels = target.dtype.kind == "i"
        t = torch.tensor(target) if labels else torch.tensor(target.astype(np.float64))
        loss = fn(p, t)
        loss.sum().backward()
        grad = p.grad * grad_scale
        kind = "i32" if labels else "f32"
        option = "" if layout is None else " layout=" + "x".join(str(d) for d in layout)
        option += " probs" if probs else ""
        self.lines.append(f"case {entry} {variant} {reduction}{option}")
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


def in_float64(loss):
    """`loss` with `Tensor.float` (a cast to float32) made a cast to float64 while it runs, for
    anchors that cast to float32 whatever the input's type (smp's `_lovasz_grad`, mmdet's
    GHMC): the anchors are evaluated in float64."""

    def fn(*args):
        cast = torch.Tensor.float
        torch.Tensor.float = torch.Tensor.double
        try:
            return loss(*args)
        finally:
            torch.Tensor.float = cast

    return fn
