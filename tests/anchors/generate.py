"""Writes the anchor fixtures: each loss's value and gradient as its anchor library computes
them (in float64), on inputs drawn here, for tests/anchors.rs to hold the reference and the
GPU kernels to.

    python3 tests/anchors/generate.py    # needs the anchor packages the modules import
                                         # (requirements.pip says which, and how)

One module per anchor library (torch_losses.py: torch and torchvision, ...), each writing its
fixture files from `write()`. Inputs are float32 values (exact on upload), the anchors evaluate them in
float64. A case is one registry entry, one of its variants (by index, see src/registry.rs) and
one reduction; under `none` the gradient is that of the sum of the per-term losses. Every
gradient is multiplied by the variant's grad_scale, as wgloss's configs do. Hyperparameters are
passed as the float32 values wgloss's configs hold (`fixture.f32`).
"""

import importlib
import os
import sys

from fixture import HERE

if __name__ == "__main__":
    # Every module here but these two writes its fixtures from `write()`; `python3
    # generate.py NAME...` runs those modules alone.
    names = sys.argv[1:] or sorted(
        f[:-3] for f in os.listdir(HERE)
        if f.endswith(".py") and f not in ("fixture.py", "generate.py")
    )
    skipped = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            # Its anchor's packages are not installed here (see the module's docstring).
            skipped.append(f"{name} ({e})")
            continue
        module.write()
    for s in skipped:
        print(f"skipped {s}")
    sys.exit(1 if skipped else 0)
