"""FreeInit (t2vlab.techniques.free_init): one pass is plain sampling; later passes start from the filtered mix.

The filter itself is compared with diffusers' in tests/parity/test_free_init.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from t2vlab import free_init_filter
from t2vlab.techniques.free_init import FreeInit

from .helpers import tiny_pipe

PROMPT = "a panda playing a guitar"
SMALL = dict(num_frames=4, height=32, width=32, num_inference_steps=3, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=1, std=0.1)


def generate(pipe, seed=0, **kw):
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **{**SMALL, **kw}).frames


def record_passes(pipe):
    """Wrap pipe.denoise to keep each pass's starting latents, result, timesteps and progress label."""
    passes, plain = [], pipe.denoise

    def denoise(x, context, timesteps, *args, desc="denoising", **kw):
        out = plain(x, context, timesteps, *args, desc=desc, **kw)
        passes.append({"start": x.clone(), "end": out.clone(), "timesteps": timesteps.clone(), "desc": desc})
        return out

    pipe.denoise = denoise
    return passes


def test_one_iteration_is_the_plain_result_exactly(pipe):
    plain = generate(pipe)
    pipe.enable_free_init(num_iters=1)
    try:
        one = generate(pipe)
    finally:
        pipe.disable_free_init()
    assert torch.equal(one, plain)


def test_each_pass_starts_from_the_filtered_mix(pipe):
    """Recompute pass 2's start by hand from pass 1's result: diffuse back to t = 999 with the first
    starting noise, FFT over (frames, height, width), low frequencies from it, high from fresh noise."""
    pipe.enable_free_init(num_iters=3, method="gaussian", spatial_stop_frequency=0.3, temporal_stop_frequency=0.2)
    passes = record_passes(pipe)
    try:
        out = generate(pipe, seed=7)
    finally:
        pipe.disable_free_init()
        del pipe.denoise
    assert len(passes) == 3 and torch.equal(out, passes[-1]["end"])

    g = torch.Generator().manual_seed(7)
    noise = torch.randn(passes[0]["start"].shape, generator=g)  # the starting noise (init_noise_sigma = 1)
    assert torch.equal(passes[0]["start"], noise)
    abar = pipe.scheduler.alphas_cumprod[999].item()
    lpf = free_init_filter((1, *noise.shape[1:]), "gaussian", 4, 0.3, 0.2)
    dims = (-3, -2, -1)
    for k in (1, 2):
        z = math.sqrt(abar) * passes[k - 1]["end"] + math.sqrt(1 - abar) * noise
        fresh = torch.randn(noise.shape, generator=g)  # one fresh draw per pass, in order
        spectrum = torch.fft.fftshift(torch.fft.fftn(z, dim=dims), dim=dims) * lpf + \
            torch.fft.fftshift(torch.fft.fftn(fresh, dim=dims), dim=dims) * (1 - lpf)
        start = torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=dims), dim=dims).real
        assert (passes[k]["start"] - start).abs().max() <= 1e-5  # float32 FFT round trip of values ~1
        # and that start differs from both sources: the mix is a real mix
        assert (start - z).abs().max() > 0.1 and (start - fresh).abs().max() > 0.1
    for p in passes:
        assert torch.equal(p["timesteps"], passes[0]["timesteps"])


def test_fast_sampling_goes_coarse_to_fine_and_the_bar_names_the_pass(pipe):
    pipe.enable_free_init(num_iters=3, use_fast_sampling=True)
    passes = record_passes(pipe)
    try:
        generate(pipe, num_inference_steps=6)
    finally:
        pipe.disable_free_init()
        del pipe.denoise
    assert [len(p["timesteps"]) for p in passes] == [2, 4, 6]
    assert [p["desc"] for p in passes] == ["FreeInit pass 1/3", "FreeInit pass 2/3", "FreeInit pass 3/3"]


def test_filter_shapes_and_extremes():
    f = free_init_filter((1, 4, 8, 16, 16))
    assert f.shape == (1, 4, 8, 16, 16) and f.dtype == torch.float32
    assert f[0, 0, 4, 8, 8] == 1  # the zero frequency sits at the centre and is kept whole
    assert f.max() <= 1 and f.min() >= 0 and f[0, 0, 0, 0, 0] < 0.01
    assert free_init_filter((2, 3, 3), "ideal", spatial_stop_frequency=0).eq(0).all()


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_iters=0), "num_iters"), (dict(num_iters=2.0), "num_iters"), (dict(method="box"), "method"),
    (dict(order=0), "order"), (dict(spatial_stop_frequency=1.5), "spatial_stop_frequency"),
    (dict(temporal_stop_frequency=-0.1), "temporal_stop_frequency"),
    (dict(use_fast_sampling="yes"), "use_fast_sampling"),
])
def test_bad_settings_name_the_argument(pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        pipe.enable_free_init(**kwargs)
    assert pipe.free_init is None


def test_bad_filter_arguments_name_the_argument():
    with pytest.raises(ValueError, match="method"):
        free_init_filter((1, 4, 4, 4), method="butterworh")
    with pytest.raises(ValueError, match="shape"):
        free_init_filter((4, 4))
    with pytest.raises(ValueError, match="spatial_stop_frequency"):
        free_init_filter((1, 4, 4, 4), spatial_stop_frequency="0.25")
    assert FreeInit().num_iters == 3
