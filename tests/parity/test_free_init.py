"""FreeInit's low-pass filter and frequency mix against diffusers' ``FreeInitMixin`` (the only FreeInit
diffusers has: it is wired into AnimateDiff, not into this model's pipeline).

The filter is computed in float64 and rounded to float32 once on both sides: equal up to one
float32 rounding (atol 1e-7 on values in [0, 1]); the ideal filter is 0/1 and must be identical.
"""

from __future__ import annotations

import pytest
import torch

from t2vlab import free_init_filter
from t2vlab.techniques.free_init import mix_frequencies

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.free_init_utils import FreeInitMixin  # noqa: E402  (after the importorskip)

SHAPES = [(1, 4, 8, 8, 8), (1, 4, 5, 6, 10), (1, 2, 16, 4, 4), (1, 1, 1, 3, 3)]


@pytest.mark.parity
@pytest.mark.parametrize("method", ["butterworth", "gaussian", "ideal"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order, ds, dt", [(4, 0.25, 0.25), (2, 0.4, 0.1), (1.5, 1.0, 0.5), (4, 0.0, 0.25)])
def test_filter_equals_diffusers(method, shape, order, ds, dt):
    expected = FreeInitMixin()._get_free_init_freq_filter(shape, "cpu", method, order, ds, dt)
    got = free_init_filter(shape, method, order, ds, dt)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if method == "ideal":
        assert torch.equal(got, expected)
    else:
        assert (got - expected).abs().max() <= 1e-7


@pytest.mark.parity
def test_frequency_mix_equals_diffusers():
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(2, 4, 6, 8, 8, generator=g), torch.randn(2, 4, 6, 8, 8, generator=g)
    lpf = free_init_filter((1, 4, 6, 8, 8))
    expected = FreeInitMixin()._apply_freq_filter(z, noise, lpf)
    assert (mix_frequencies(z, noise, lpf) - expected).abs().max() <= 1e-6
