"""TensorFlow Addons: triplet_semihard_loss (FaceNet semi-hard mining over the batch), the
anchor of triplet_semi_hard, differentiated by TensorFlow. TFA computes it in float32 only (its
masks are cast to float32 whatever the embeddings' type): the fixture holds the reference to
float32's rounding (`reference-tolerance`); the mining, which a wrong choice of negative would
show at full size, is checked all the same. Needs tensorflow and tensorflow-addons (which do not
share an environment with the torch-based modules: run `python3 tests/anchors/generate.py
tf_addons_losses` where they are installed)."""

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa

from fixture import Fixture, f32, values

VERSIONS = f"tensorflow {tf.__version__}, tensorflow-addons {tfa.__version__}"
N, D, LABELS = 12, 3, 3
# Inputs are redrawn until no distance comparison the mining makes is this close to a tie,
# and no hinge this close to its kink.
KINK = 1e-3


def labels(fx):
    while True:
        y = fx.labels(N, LABELS)
        if (np.bincount(y, minlength=LABELS) >= 2).all():
            return y


def clear(x, y, margin, squared):
    """Whether every comparison the semi-hard mining makes is clear of ties and every hinge of
    its kink."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]).astype(np.float64) ** 2).sum(-1))
    d = d**2 if squared else d
    same = y[:, None] == y[None, :]
    for a in range(N):
        neg = np.sort(d[a][~same[a]])
        if np.min(np.diff(neg)) < KINK:
            return False
        for p in range(N):
            if p == a or not same[a, p]:
                continue
            if np.min(np.abs(neg - d[a, p])) < KINK:
                return False
            outside = neg[neg > d[a, p]]
            chosen = outside[0] if outside.size else neg[-1]
            if abs(margin + d[a, p] - chosen) < KINK:
                return False
    return True


def case(fx, variant, x, y, margin, squared):
    metric = "squared-L2" if squared else "L2"
    e = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tfa.losses.triplet_semihard_loss(tf.constant(y), e, margin=margin,
                                                distance_metric=metric)
    grad = tape.gradient(loss, e)
    fx.lines.append(f"case triplet_semi_hard {variant} mean")
    fx.lines.append(values("pred", "f32", x))
    fx.lines.append(values("target", "i32", y))
    fx.lines.append(values("loss", "f64", loss.numpy()))
    fx.lines.append(values("grad", "f64", grad.numpy()))


def write():
    fx = Fixture("tf_addons", 8, VERSIONS)
    # float32 arithmetic over sums of a few dozen terms.
    fx.lines.append("reference-tolerance 1e-5 1e-6")
    for v, (margin, squared) in enumerate([(1.0, False), (f32(0.3), True)]):
        for _ in range(2):
            while True:
                x, y = fx.uniform((N, D), -2, 2), labels(fx)
                if clear(x, y, margin, squared):
                    break
            case(fx, v, x, y, margin, squared)
    fx.write()
