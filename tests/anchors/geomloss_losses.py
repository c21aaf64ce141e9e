"""geomloss SamplesLoss("sinkhorn") (tensorized backend) on the registry's stacked clouds:
pred [x; y] of [2n, d], target the weights [α; β] of [2n]; the gradient w.r.t. both clouds."""

import geomloss
import numpy as np
import torch

from fixture import Fixture, f32

VERSIONS = f"geomloss {geomloss.__version__}, torch {torch.__version__}"


def weights(fx, n):
    w = fx.uniform(n, 0.05, 1.0)
    w[1::5] = 0.0
    return (w / w.sum(dtype=np.float32)).astype(np.float32)


def write():
    fx = Fixture("geomloss", 6, VERSIONS)
    n, d = 9, 3
    for v, (p, blur, scaling, debias, weighted, gs) in enumerate([
        (2, 0.05, 0.5, True, True, 1.0),
        (1, 0.1, 0.7, True, False, 0.5),
        (2, 0.2, 0.5, False, True, 2.0),
    ]):
        for _ in range(2):
            clouds = fx.uniform((2 * n, d), -1, 1) / np.float32(np.sqrt(d))
            clouds = clouds.astype(np.float32)
            w = np.concatenate([weights(fx, n), weights(fx, n)])
            loss = geomloss.SamplesLoss(
                "sinkhorn", p=p, blur=f32(blur), scaling=f32(scaling), debias=debias,
                backend="tensorized",
            )

            def fn(pts, wt, loss=loss, weighted=weighted):
                x, y = pts[:n], pts[n:]
                if weighted:
                    return loss(wt[:n], x, wt[n:], y)
                return loss(x, y)

            fx.case("sinkhorn", v, "mean", clouds, w, fn, gs, layout=(n, d))
    fx.write()
