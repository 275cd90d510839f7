"""AutoencoderKL against diffusers': the checkpoint layout, encode/decode, the posterior, the video
decode of diffusers' TextToVideoSDPipeline, and reading diffusers' files.

Tolerances: parity tests run in float32 on random weights and allow relative error 1e-5
(max |ours - ref| / max |ref|); the same arithmetic in a different order (SDPA vs. baddbmm, a
different batch size picking another conv algorithm) differs by ~1e-6 after a few dozen layers.
"""

from __future__ import annotations

import types

import pytest
import torch

from t2vlab import AutoencoderKL, configs
from tests.helpers import VAE_TINY as TINY
from tests.helpers import randomize_, rel_err

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.parity

FULL_CONFIG = configs.VAE  # the published vae/config.json

# besides TINY (2 levels with attention and quant convs): 3 levels, 2 layers, no attention or quant convs
TINY_B = dict(block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
              up_block_types=["UpDecoderBlock2D"] * 3, norm_num_groups=4, layers_per_block=2, sample_size=32,
              mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False)


def pair(config, seed=0):
    """(ours, diffusers') with the same random weights; ours is filled with other random values first."""
    ref = randomize_(diffusers.AutoencoderKL(**config), seed=seed).eval()
    ours = randomize_(AutoencoderKL.from_config(config), seed=seed + 100).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


@pytest.fixture(scope="module")
def tiny_pair():
    return pair(TINY)


# ---------------------------------------------------------------------------------------- config
def test_full_size_on_meta_has_diffusers_keys_and_shapes():
    cfg = FULL_CONFIG
    with torch.device("meta"):
        ours = AutoencoderKL.from_config(cfg)
        ref = diffusers.AutoencoderKL.from_config(cfg)
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.num_parameters() == configs.PARAMETERS["vae"] == 83_653_863
    assert ours.config.block_out_channels == (128, 256, 512, 512) and ours.spatial_factor == 8
    assert ours.config.scaling_factor == 0.18215 and ours.config.latent_channels == 4


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("config", [TINY, TINY_B], ids=["2-levels-attn", "3-levels-no-attn-no-quant"])
def test_encode_decode_match_diffusers(config):
    ours, ref = pair(config, seed=1)
    f = ours.spatial_factor
    x = torch.randn(2, 3, 8 * f, 6 * f, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        post, ref_post = ours.encode(x), ref.encode(x).latent_dist
        out, ref_out = ours.decode(z), ref.decode(z).sample
    assert rel_err(post.mean, ref_post.mean) < 1e-5
    assert rel_err(post.logvar, ref_post.logvar) < 1e-5
    assert rel_err(post.kl(), ref_post.kl()) < 1e-5
    assert rel_err(out, ref_out) < 1e-5
    sample = post.sample(torch.Generator().manual_seed(3))
    assert rel_err(sample, ref_post.sample(torch.Generator().manual_seed(3))) < 1e-5
    assert torch.equal(post.mode(), post.mean)


def test_from_pretrained_reads_diffusers_save(tmp_path, tiny_pair):
    _, ref = tiny_pair
    ref.save_pretrained(tmp_path / "vae", variant="fp16")
    vae = AutoencoderKL.from_pretrained(tmp_path, subfolder="vae", variant="fp16", torch_dtype=torch.float16)
    assert vae.dtype == torch.float16
    for k, v in ref.state_dict().items():
        assert torch.equal(vae.state_dict()[k], v.half()), k


def test_decode_video_matches_diffusers_text_to_video_pipeline(tiny_pair):
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth import (
        TextToVideoSDPipeline,
    )
    from diffusers.video_processor import VideoProcessor

    ours, ref = tiny_pair
    b, f = 2, 3  # distinct batch and frame counts, so a swapped fold shows
    latents = torch.randn(b, 4, f, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        video = TextToVideoSDPipeline.decode_latents(types.SimpleNamespace(vae=ref), latents)
        expected = VideoProcessor(do_resize=False).postprocess_video(video, output_type="np")
        expected = torch.from_numpy(expected)
        frames = ours.decode_video(latents)
    assert frames.shape == (b, f, 10, 14, 3) and frames.dtype == torch.float32
    assert (frames - expected).abs().max() < 1e-5  # values in [0, 1]: absolute = relative here


def test_posterior_matches_diffusers_including_clamped_logvar():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from t2vlab.vae import DiagonalGaussian

    # logvar beyond the clamp range [-30, 20]
    moments = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(0)) * 40
    ours, ref = DiagonalGaussian(moments), DiagonalGaussianDistribution(moments)
    assert ours.logvar.min() == -30 and ours.logvar.max() == 20
    for name in ("mean", "logvar", "std", "var"):
        assert rel_err(getattr(ours, name), getattr(ref, name)) < 1e-6, name
    assert rel_err(ours.kl(), ref.kl()) < 1e-6
