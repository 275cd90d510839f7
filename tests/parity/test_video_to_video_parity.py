"""VideoToVideoPipeline against diffusers' VideoToVideoSDPipeline, frame for frame, on a tiny checkpoint
that diffusers itself saved (random weights, the fixture pattern of tests/test_pipeline.py).

Same inputs, one seeded torch.Generator: the same two draws in the same order (the VAE posterior's
sample, then the noise added at the starting timestep), the same tail of the schedule, the same frames.

Tolerance: 1e-4 absolute on frames in [0, 1] (float32), as for text-to-video (tests/test_pipeline.py):
every component matches to ~1e-6 relative; through a few guided steps (guidance 15 amplifies the UNet's
small differences fifteenfold) and the VAE both ways, the frames stay within ~1e-5; 1e-4 is far below
one 8-bit grey level (3.9e-3) and far above float32 noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import t2vlab
from t2vlab.video_to_video import VideoToVideoPipeline
from t2vlab.weights import SCHEDULER_CONFIG, TINY_TEXT, TINY_UNET, TINY_VAE

from ..helpers import randomize_

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4
HEIGHT, WIDTH = 32, 48  # not square: a swapped height and width would show

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one thread for tiny tensors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(diffusers' VideoToVideoSDPipeline, the folder it saved): random weights, std 0.2."""
    tok = tmp_path_factory.mktemp("tok")
    t2vlab.Tokenizer.default().save_pretrained(tok)
    unet = randomize_(diffusers.UNet3DConditionModel(**TINY_UNET), seed=0, std=0.2).eval()
    vae = randomize_(diffusers.AutoencoderKL(**TINY_VAE), seed=1, std=0.2).eval()
    text_cfg = transformers.CLIPTextConfig(**TINY_TEXT, vocab_size=49408, max_position_embeddings=77)
    text = randomize_(transformers.CLIPTextModel(text_cfg), seed=2, std=0.2).eval()
    ref = diffusers.VideoToVideoSDPipeline(vae=vae, text_encoder=text, tokenizer=transformers.CLIPTokenizer
                                           .from_pretrained(str(tok)), unet=unet,
                                           scheduler=diffusers.DDIMScheduler.from_config(SCHEDULER_CONFIG))
    ref.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("ref")
    ref.save_pretrained(folder)
    return ref, folder


@pytest.fixture(scope="module")
def ours(saved):
    pipe = VideoToVideoPipeline.from_pretrained(saved[1])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def source_video(frames, seed=0):
    """A smooth float video in [0, 1] (list of (H, W, 3) frames, what diffusers' preprocessing takes)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, HEIGHT // 4, WIDTH // 4, generator=g)
    video = []
    for f in range(frames):
        img = torch.nn.functional.interpolate(base.roll(f, -1), size=(HEIGHT, WIDTH), mode="bilinear")
        video.append(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
    return video


def run_both(ref, ours, scheduler, frames, strength, steps, **kw):
    ref.scheduler = getattr(diffusers, scheduler).from_config(ref.scheduler.config)
    ours.scheduler = getattr(t2vlab, scheduler).from_config(ours.scheduler.config)
    args = dict(prompt="a red circle moving left", video=source_video(frames), strength=strength,
                num_inference_steps=steps, negative_prompt="blurry", **kw)
    expected = ref(**args, generator=torch.Generator().manual_seed(0)).frames
    got = ours(**args, generator=torch.Generator().manual_seed(0)).frames
    return got, expected


@pytest.mark.parity
@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("strength", [0.5, 0.8])
@pytest.mark.parametrize("steps", [4, 7])
def test_frames_equal_diffusers(saved, ours, scheduler, frames, strength, steps):
    """Default guidance (15). Measured worst case over these 16: 4.9e-6."""
    got, expected = run_both(saved[0], ours, scheduler, frames, strength, steps)
    assert got.shape == expected.shape == (1, frames, HEIGHT, WIDTH, 3)
    assert np.abs(got - expected).max() <= ATOL
    assert expected.std() > 0.01  # a non-trivial video


@pytest.mark.parity
def test_stochastic_ddim_eta_matches(saved, ours):
    """eta > 0 draws noise in every step too, after the two draws of the start: same order, same frames."""
    got, expected = run_both(saved[0], ours, "DDIMScheduler", 2, 0.6, 5, eta=1.0)
    assert np.abs(got - expected).max() <= ATOL


@pytest.mark.parity
def test_latents_as_the_video_skip_encoding(saved, ours):
    """4-channel latents are used as they are: ours take (B, 4, F, h, w), the reference (B, F, 4, h, w)."""
    ref = saved[0]
    ref.scheduler = diffusers.DDIMScheduler.from_config(ref.scheduler.config)
    ours.scheduler = t2vlab.DDIMScheduler.from_config(ours.scheduler.config)
    z = torch.randn(1, 4, 2, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(3))
    kw = dict(prompt="a red circle moving left", strength=0.7, num_inference_steps=5)
    expected = ref(video=z.transpose(1, 2), generator=torch.Generator().manual_seed(0), **kw).frames
    got = ours(video=z, generator=torch.Generator().manual_seed(0), **kw).frames
    assert np.abs(got - expected).max() <= ATOL
