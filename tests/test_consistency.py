"""Consistency models: the boundary condition f(x, t_min) = x, the guidance-scale embedding, and the UNet's
guidance embedding (time_cond_proj_dim / timestep_cond). The same against diffusers is in
tests/parity/test_consistency_parity.py and tests/parity/test_unet_parity.py; the LCM sampler is in
tests/test_schedulers.py."""

from __future__ import annotations

import pytest
import torch

import t2vlab.schedulers as schedulers
from t2vlab import UNet3DConditionModel
from t2vlab.checkpoint import CheckpointError
from t2vlab.techniques.consistency import boundary_scalings, consistency_output, guidance_scale_embedding

from .helpers import UNET_CONFIGS, randomize_, rel_err

DIM = 12  # time_cond_proj_dim of the small UNets here


# ----------------------------------------------------------------------------------- boundary condition
@pytest.mark.parametrize("timestep_scaling", [10.0, 4.0, 0.5])
def test_boundary_condition_makes_f_the_identity_at_t_min(timestep_scaling):
    """c_skip(0) = 1 and c_out(0) = 0 exactly, so f(x, 0) = x whatever the network says; far from t = 0
    the skip vanishes and f is the network's x0 estimate."""
    assert boundary_scalings(0, timestep_scaling) == (1.0, 0.0)
    g = torch.Generator().manual_seed(0)
    x, x0_hat = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    assert torch.equal(consistency_output(x0_hat, x, torch.tensor(0), timestep_scaling), x)
    c_skip, c_out = boundary_scalings(999, timestep_scaling)
    assert c_skip < 1e-5 and abs(c_out - 1) < 1e-5  # k = 0.5: c_skip(999) = 1.0e-6
    # the formula at one point, written out: u = k t, c_skip = s^2 / (u^2 + s^2), c_out = u / sqrt(u^2 + s^2)
    u = 3 * timestep_scaling
    assert boundary_scalings(3, timestep_scaling) == pytest.approx((0.25 / (u * u + 0.25), u / (u * u + 0.25) ** 0.5),
                                                                   rel=1e-12)


def test_lcm_scheduler_step_at_t_min_returns_its_input():
    """The sampler's side of the boundary condition: a schedule ending at t = 0 returns the sample as it is."""
    s = schedulers.LCMScheduler()
    s.set_timesteps(timesteps=[0])
    x = torch.randn(1, 4, 2, 3, 3)
    out = s.step(torch.randn(1, 4, 2, 3, 3), s.timesteps[0], x)
    assert torch.equal(out.prev_sample, x) and torch.equal(out.denoised, x)


# --------------------------------------------------------------------------------- guidance embedding w
def test_guidance_scale_embedding_is_sin_then_cos_of_1000_w():
    emb = guidance_scale_embedding(torch.tensor([0.0, 7.5]), embedding_dim=8)
    assert emb.shape == (2, 8) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # w = 0: sin 0 = 0 first, then cos 0 = 1
    freqs = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 3)  # f_i = 10000^(-i / (h - 1)), h = 4
    angles = 7500.0 * freqs
    # float32 angles of up to 7500 rad: rounding moves sin/cos by up to ~5e-4 (half an ulp of 7500 is 2.4e-4)
    assert torch.allclose(emb[1].double(), torch.cat([angles.sin(), angles.cos()]), atol=1e-3)
    assert torch.equal(guidance_scale_embedding(7.5, 8), emb[1:])  # a number is one scale
    odd = guidance_scale_embedding(torch.tensor([7.5]), embedding_dim=9)
    assert torch.equal(odd[:, :8], emb[1:]) and odd[0, 8] == 0  # an odd width pads a zero column


@pytest.mark.parametrize("w,dim,word", [(torch.zeros(2, 2), 8, "w must be"), (float("nan"), 8, "w must be"),
                                        (torch.tensor([True]), 8, "w must be"), (7.5, 3, "embedding_dim"),
                                        (7.5, 8.0, "embedding_dim")])
def test_guidance_scale_embedding_refuses_bad_input_by_name(w, dim, word):
    with pytest.raises(ValueError, match=word):
        guidance_scale_embedding(w, embedding_dim=dim)


# ------------------------------------------------------------------------------- the UNet's cond_proj
def unet(dim=None, seed=0):
    return randomize_(UNet3DConditionModel.from_config(dict(UNET_CONFIGS["two-levels"], sample_size=8,
                                                            time_cond_proj_dim=dim)), seed=seed).eval()


def unet_inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 4, 2, 8, 8, generator=g), torch.tensor([999, 10][:batch]), \
        torch.randn(batch, 7, 16, generator=g)


def test_without_time_cond_proj_dim_nothing_changes():
    """time_cond_proj_dim=None: no cond_proj, no new key; with it, exactly one new parameter under the
    published name, and with that weight at zero the output is bit-identical to the plain UNet's (the
    condition is only ever added to the timestep features)."""
    plain, embedded = unet(None), unet(DIM)
    assert plain.time_embedding.cond_proj is None
    assert not any("cond_proj" in k for k in plain.state_dict())
    new = set(embedded.state_dict()) - set(plain.state_dict())
    assert new == {"time_embedding.cond_proj.weight"} and set(plain.state_dict()) <= set(embedded.state_dict())
    assert embedded.state_dict()["time_embedding.cond_proj.weight"].shape == (32, DIM)  # -> block_out_channels[0]
    embedded.load_state_dict({**plain.state_dict(), "time_embedding.cond_proj.weight": torch.zeros(32, DIM)})
    x, t, text = unet_inputs()
    with torch.no_grad():
        expected = plain(x, t, text)
        assert torch.equal(embedded(x, t, text, timestep_cond=guidance_scale_embedding(torch.tensor([7.5, 1.0]), DIM)),
                           expected)


def test_timestep_cond_changes_the_output_and_broadcasts_over_the_batch():
    model = unet(DIM)
    x, t, text = unet_inputs()
    one = guidance_scale_embedding(torch.tensor([7.5]), DIM)
    with torch.no_grad():
        a = model(x, t, text, timestep_cond=one.expand(2, DIM))
        # (1, D) is every video's; cond_proj on 1 row rather than 2 is another matmul, so a few ulps apart
        assert rel_err(model(x, t, text, timestep_cond=one), a) <= 1e-6
        b = model(x, t, text, timestep_cond=guidance_scale_embedding(torch.tensor([1.0, 1.0]), DIM))
        assert (a - b).abs().max() > 1e-3


def test_missing_or_wrong_timestep_cond_is_a_clear_error():
    embedded, plain = unet(DIM), unet(None)
    x, t, text = unet_inputs()
    with pytest.raises(ValueError, match="timestep_cond is required.*time_cond_proj_dim=12"):
        embedded(x, t, text)
    for bad in (torch.zeros(2, DIM + 1), torch.zeros(3, DIM), torch.zeros(DIM), torch.zeros(2, 1, DIM), [0.0] * DIM):
        with pytest.raises(ValueError, match=r"timestep_cond must be a tensor of shape \(2, 12\)"):
            embedded(x, t, text, timestep_cond=bad)
    with pytest.raises(ValueError, match="timestep_cond was given.*time_cond_proj_dim is None"):
        plain(x, t, text, timestep_cond=torch.zeros(2, DIM))


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "256"])
def test_bad_time_cond_proj_dim_is_refused_before_allocation(bad):
    with pytest.raises(CheckpointError, match="time_cond_proj_dim"):
        UNet3DConditionModel.from_config(dict(UNET_CONFIGS["two-levels"], time_cond_proj_dim=bad))
    with pytest.raises(CheckpointError, match="num_attention_heads"):  # still not part of this architecture
        UNet3DConditionModel.from_config(dict(UNET_CONFIGS["two-levels"], num_attention_heads=4))


def test_guidance_embedded_unet_round_trips_through_save_pretrained(tmp_path):
    model = unet(DIM, seed=4)
    model.save_pretrained(tmp_path)
    back = UNet3DConditionModel.from_pretrained(tmp_path).eval()
    assert back.config.time_cond_proj_dim == DIM
    assert torch.equal(back.time_embedding.cond_proj.weight, model.time_embedding.cond_proj.weight)
