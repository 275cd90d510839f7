"""FreeU switched on and off (t2vlab.techniques.freeu); equality with diffusers is tests/parity/test_freeu.py."""

from __future__ import annotations

import math

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.techniques.freeu import FreeUScale, apply_freeu, fourier_filter

from .helpers import randomize_


@pytest.fixture(scope="module")
def pipe():
    p = TextToVideoPipeline.from_pretrained("tiny")
    randomize_(p.unet, seed=5)  # no zero-initialised layer hides a path
    return p


def unet_inputs(unet, frames=3):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, frames, 8, 8, generator=g), torch.tensor([900, 20]),
            torch.randn(2, 5, unet.config.cross_attention_dim, generator=g))


def test_disable_freeu_restores_the_plain_output_exactly(pipe):
    args = unet_inputs(pipe.unet)
    with torch.no_grad():
        plain = pipe.unet(*args)
        pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
        assert pipe.unet.freeu_enabled
        changed = pipe.unet(*args)
        pipe.disable_freeu()
        assert not pipe.unet.freeu_enabled
        again = pipe.unet(*args)
    assert torch.equal(again, plain)
    assert (changed - plain).abs().max() > 1e-3


def test_freeu_touches_only_the_two_lowest_resolution_up_levels(pipe):
    pipe.unet.enable_freeu(1, 1, 1, 1)
    try:
        scales = [block.freeu for block in pipe.unet.up_blocks]
    finally:
        pipe.unet.disable_freeu()
    assert scales[:2] == [FreeUScale(1.0, 1.0)] * 2 and all(s is None for s in scales[2:])


def test_unit_factors_change_nothing_but_rounding(pipe):
    args = unet_inputs(pipe.unet)
    with torch.no_grad():
        plain = pipe.unet(*args)
        pipe.unet.enable_freeu(1, 1, 1, 1)
        try:
            got = pipe.unet(*args)
        finally:
            pipe.unet.disable_freeu()
    assert (got - plain).abs().max() <= 1e-4 * plain.abs().max()  # two FFTs round to ~1e-7 each


def test_fourier_filter_scales_the_zero_frequency():
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fourier_filter(x, 1.0), x, atol=1e-6)
    # the 2x2 square around the centre holds the zero frequency (the mean) and the frequency -1 on each axis
    constant = torch.full((1, 1, 6, 8), 2.0)
    assert torch.allclose(fourier_filter(constant, 0.5), constant * 0.5, atol=1e-6)
    assert fourier_filter(x, 0.0).mean(dim=(-2, -1)).abs().max() < 1e-6
    half = torch.randn(1, 2, 4, 4).half()
    assert fourier_filter(half, 0.5).dtype == torch.float16


def test_apply_freeu_amplifies_the_first_half_of_the_backbone_channels():
    backbone, skip = torch.ones(1, 4, 2, 2), torch.ones(1, 3, 2, 2)
    b, s = apply_freeu(backbone, skip, FreeUScale(backbone=2.0, skip=1.0))
    assert b[:, :2].eq(2).all() and b[:, 2:].eq(1).all() and torch.allclose(s, skip)


@pytest.mark.parametrize("name, value", [("s1", -0.1), ("s2", math.nan), ("b1", "1.2"), ("b2", math.inf),
                                         ("b1", True)])
def test_bad_factors_name_the_argument(pipe, name, value):
    factors = {**dict(s1=0.9, s2=0.2, b1=1.2, b2=1.4), name: value}
    with pytest.raises(ValueError, match=name):
        pipe.enable_freeu(**factors)
    assert not pipe.unet.freeu_enabled
