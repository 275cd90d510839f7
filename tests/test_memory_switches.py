"""The pipeline's memory switches (t2vlab.memory_switches): each reaches the model that holds the memory, and
each disable_* puts it back, so the video is the plain one bit for bit."""

from __future__ import annotations

import pytest
import torch

from t2vlab import TextToVideoPipeline


@pytest.fixture(scope="module")
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def video(pipe, size=64):
    return pipe("a red circle", num_frames=2, height=size, width=size, num_inference_steps=2, output_type="pt",
                generator=torch.Generator().manual_seed(0)).frames


@pytest.mark.parametrize("name, holder, on", [
    ("vae_slicing", "vae", lambda p: p.vae.use_slicing),
    ("vae_tiling", "vae", lambda p: p.vae.use_tiling),
    ("attention_slicing", "unet", lambda p: any(m.backend == "sliced" for m in p.unet.attention_modules())),
])
def test_each_switch_reaches_its_model_and_disabling_restores_the_plain_video(pipe, name, holder, on):
    plain = video(pipe, 96)
    getattr(pipe, f"enable_{name}")()
    try:
        assert on(pipe), f"enable_{name} did not reach the {holder}"
    finally:
        getattr(pipe, f"disable_{name}")()
    assert not on(pipe)
    assert torch.equal(video(pipe, 96), plain)


def test_tiling_acts_on_frames_larger_than_a_tile(pipe):
    plain = video(pipe, 96)  # 96 pixels: larger than the tiny VAE's 64-pixel tile
    pipe.enable_vae_tiling(tile_size=64, overlap=16)
    try:
        tiled = video(pipe, 96)
    finally:
        pipe.disable_vae_tiling()
    assert not torch.equal(tiled, plain)  # blended tiles, not the one-piece decode
    assert (tiled - plain).abs().max() < 0.5  # yet the same picture
