"""The whole pipeline against diffusers' TextToVideoSDPipeline, frame for frame, and checkpoints that
each side writes and the other reads.

Parity tolerance: 1e-4 absolute on frames in [0, 1] (float32). Every component matches to ~1e-6
relative; through 5-10 denoising steps with guidance 9 (which amplifies the UNet's small
differences ninefold) and the VAE, the frames stay within a few 1e-6; 1e-4 is far below one
8-bit grey level (3.9e-3) yet far above float32 noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import t2vlab
from t2vlab import TextToVideoPipeline
from t2vlab.weights import TINY_TEXT, TINY_UNET, TINY_VAE
from tests.helpers import randomize_

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity

ATOL = 1e-4


def diffusers_pipeline(folder_tokenizer, seed=0):
    """A tiny TextToVideoSDPipeline built from diffusers' and transformers' own classes."""
    from t2vlab.weights import SCHEDULER_CONFIG

    unet = randomize_(diffusers.UNet3DConditionModel(**TINY_UNET), seed=seed, std=0.2)
    vae = randomize_(diffusers.AutoencoderKL(**TINY_VAE), seed=seed + 1, std=0.2)
    text_cfg = transformers.CLIPTextConfig(**TINY_TEXT, vocab_size=49408, max_position_embeddings=77)
    text = randomize_(transformers.CLIPTextModel(text_cfg), seed=seed + 2, std=0.2)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder_tokenizer))
    scheduler = diffusers.DDIMScheduler.from_config(SCHEDULER_CONFIG)
    for model in (unet, vae, text):
        model.eval()  # freshly constructed modules are in training mode: dropout would be live
    return diffusers.TextToVideoSDPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                           scheduler=scheduler).to(torch.float32)


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    t2vlab.Tokenizer.default().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved_reference(tmp_path_factory, tokenizer_folder):
    """{(safe, variant): folder} written by diffusers' save_pretrained, and the reference pipeline."""
    ref = diffusers_pipeline(tokenizer_folder)
    ref.set_progress_bar_config(disable=True)
    folders = {}
    for safe, variant in [(True, None), (False, None), (True, "fp16")]:
        folder = tmp_path_factory.mktemp(f"ref-{safe}-{variant}")
        if variant == "fp16":
            half = diffusers_pipeline(tokenizer_folder).to(torch.float16)
            half.save_pretrained(folder, safe_serialization=safe, variant=variant)
        else:
            ref.save_pretrained(folder, safe_serialization=safe, variant=variant)
        folders[(safe, variant)] = folder
    return ref, folders


def run_both(ref, ours, scheduler=None, n_videos=1, steps=6, **kw):
    if scheduler is not None:
        ref.scheduler = getattr(diffusers, scheduler).from_config(ref.scheduler.config)
        ours.scheduler = getattr(t2vlab, scheduler).from_config(ours.scheduler.config)
    args = dict(prompt="a red circle moving left", negative_prompt="blurry", num_frames=3, height=32, width=48,
                num_inference_steps=steps, guidance_scale=9.0, **kw)
    expected = ref(**{**args, "prompt": [args["prompt"]] * n_videos, "negative_prompt": ["blurry"] * n_videos},
                   generator=torch.Generator().manual_seed(0)).frames
    got = ours(**args, num_videos_per_prompt=n_videos, generator=torch.Generator().manual_seed(0)).frames
    return got, expected


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("n_videos", [1, 3])
def test_frames_equal_diffusers(saved_reference, scheduler, n_videos):
    ref, folders = saved_reference
    ours = TextToVideoPipeline.from_pretrained(folders[(True, None)])
    ours.set_progress_bar_config(disable=True)
    got, expected = run_both(ref, ours, scheduler, n_videos)
    assert got.shape == expected.shape == (n_videos, 3, 32, 48, 3)
    assert np.abs(got - expected).max() <= ATOL
    assert expected.std() > 0.01  # a non-trivial video


def test_stochastic_ddim_eta_matches(saved_reference):
    """eta > 0 draws noise inside each step: same generator, same layout, same frames."""
    ref, folders = saved_reference
    ours = TextToVideoPipeline.from_pretrained(folders[(True, None)])
    ours.set_progress_bar_config(disable=True)
    got, expected = run_both(ref, ours, "DDIMScheduler", eta=1.0)
    assert np.abs(got - expected).max() <= ATOL


@pytest.mark.parametrize("safe,variant", [(False, None), (True, "fp16")])
def test_loads_bin_and_fp16_variant(saved_reference, safe, variant):
    ref, folders = saved_reference
    ours = TextToVideoPipeline.from_pretrained(folders[(safe, variant)], variant=variant, torch_dtype=torch.float32)
    if variant is None:  # same weights as the reference: same frames
        ours.set_progress_bar_config(disable=True)
        got, expected = run_both(ref, ours, "DDIMScheduler", steps=3)
        assert np.abs(got - expected).max() <= ATOL
    else:  # the fp16 files hold the fp16 rounding of another random draw: compare weights
        half = diffusers.TextToVideoSDPipeline.from_pretrained(folders[(safe, variant)], variant="fp16")
        for name in ("unet", "vae"):
            theirs = getattr(half, name).state_dict()
            for k, v in getattr(ours, name).state_dict().items():
                assert torch.equal(v, theirs[k].float()), (name, k)


def test_tiny_checkpoint_is_readable_by_diffusers(tiny):
    ref = diffusers.TextToVideoSDPipeline.from_pretrained(tiny)
    ours = TextToVideoPipeline.from_pretrained(tiny)
    for name in ("unet", "vae"):
        theirs = getattr(ref, name).state_dict()
        for k, v in getattr(ours, name).state_dict().items():
            assert torch.equal(v, theirs[k]), (name, k)
