"""optax: log_cosh, hinge_loss and poly_loss_cross_entropy, differentiated by jax in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fixture import REDUCTIONS, Fixture, values

jax.config.update("jax_enable_x64", True)
VERSIONS = f"optax {optax.__version__}, jax {jax.__version__}"


def reduce(loss, reduction):
    return {"none": loss, "mean": jnp.mean(loss), "sum": jnp.sum(loss)}[reduction]


def case(fx, entry, variant, reduction, pred, target, fn, grad_scale=1.0):
    """`fn(pred, target)` per term, reduced, and jax's gradient of its sum w.r.t. pred."""
    t = jnp.asarray(target if target.dtype.kind == "i" else target.astype(np.float64))

    def total(p):
        return jnp.sum(reduce(fn(p, t), reduction))

    p = jnp.asarray(pred.astype(np.float64))
    loss = reduce(fn(p, t), reduction)
    grad = jax.grad(total)(p) * grad_scale
    kind = "i32" if target.dtype.kind == "i" else "f32"
    fx.lines.append(f"case {entry} {variant} {reduction}")
    fx.lines.append(values("pred", "f32", pred))
    fx.lines.append(values("target", kind, target))
    fx.lines.append(values("loss", "f64", np.asarray(loss)))
    fx.lines.append(values("grad", "f64", np.asarray(grad)))


def poly1(epsilon):
    """Per row of logits [N, C, S] and labels [N, S]: the class axis moved last, one-hot
    labels (no ignored row: optax has no ignore index)."""

    def fn(x, y):
        rows = jnp.moveaxis(x, 1, -1)
        onehot = jax.nn.one_hot(y, x.shape[1], dtype=x.dtype)
        return optax.losses.poly_loss_cross_entropy(rows, onehot, epsilon=epsilon)

    return fn


def write():
    fx = Fixture("optax", 5, VERSIONS)
    for reduction in REDUCTIONS:
        for v, gs in enumerate([1.0, 0.5]):
            p, t = fx.uniform(37, -3, 3), fx.uniform(37, -3, 3)
            case(fx, "log_cosh", v, reduction, p, t, optax.losses.log_cosh, gs)
        # Variant 0 only: optax's hinge has a margin of 1 (variant 1's 0.5 is wgloss's).
        p = fx.uniform(37, -6, 6)
        t = np.where(fx.uniform(37, 0, 1) < 0.5, -1.0, 1.0).astype(np.float32)
        case(fx, "hinge", 0, reduction, p, t, optax.losses.hinge_loss)
        for v, (eps, gs) in enumerate([(1.0, 1.0), (2.0, 0.5), (-0.5, 1.0)]):
            x = fx.uniform((5, 7, 3), -6, 6)
            y = fx.labels((5, 3), 7)
            case(fx, "poly1", v, reduction, x, y, poly1(eps), gs)
    # Tiny residuals: log cosh r = r^2 / 2 to the last bit.
    p = np.array([1e-20, -3e-8, 2e-4, 0.49, 0.51, 20.0, -40.0], dtype=np.float32)
    case(fx, "log_cosh", 0, "none", p, np.zeros_like(p), optax.losses.log_cosh)
    fx.write()
