"""Notebook 15's exercise: DeepCache's premise, how far a kept feature is from the one the next step computes."""

from __future__ import annotations

import torch

from ..techniques.deepcache import relative_changes
from .core import Exercise, call, compare, generator, register


def feature_changes(features):
    """features: a list of S + 1 tensors of one shape, what one level computed at each denoising step
    -> (S,) tensor: ||f_s - f_{s-1}|| / ||f_s|| for s = 1..S (Frobenius norms)."""
    return torch.stack([(features[s] - features[s - 1]).norm() / features[s].norm() for s in range(1, len(features))])


def check_feature_changes(fn):
    g = generator(17)
    start = torch.randn(2, 3, 4, 4, generator=g)
    features = [start * (1 + 0.3 * s) + 0.2 * s * torch.randn(2, 3, 4, 4, generator=g) for s in range(5)]
    want = relative_changes(features)
    steps = [(b - a) for a, b in zip(features, features[1:])]
    compare(call(fn, features), want, "feature_changes(features)", mistakes={
        "without dividing by the feature's own size (an absolute change, which grows with the feature's scale)":
            torch.stack([d.norm() for d in steps]),
        "dividing by the previous step's feature instead of this step's":
            torch.stack([d.norm() / a.norm() for d, a in zip(steps, features)]),
        "with the mean absolute change instead of the norms":
            torch.stack([d.abs().mean() / b.abs().mean() for d, b in zip(steps, features[1:])]),
    })


register(Exercise("15.changes", "how much a feature changes per step", "feature_changes", check_feature_changes,
                  feature_changes, hint="for s in 1..S: (f[s] - f[s-1]).norm() / f[s].norm(), stacked"))
