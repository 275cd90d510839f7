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


def test_layerwise_casting_on_the_pipeline_reaches_every_model_and_equals_each_model_s_own(tiny):
    """pipe.enable_layerwise_casting casts each model as its own enable_layerwise_casting does (the same frames,
    exactly), ``models=`` picks some, a name that is not a model is refused by name, and disabling puts back the
    storage dtype (float32) of every model."""
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    by_model = TextToVideoPipeline.from_pretrained(tiny)
    pipe.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32)
    for model in by_model.models.values():
        model.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32)
    for name, model in pipe.models.items():
        assert any(p.dtype == torch.float8_e4m3fn for p in model.parameters()), f"{name} was not cast"
    assert torch.equal(video(pipe), video(by_model))
    pipe.disable_layerwise_casting()
    assert all(p.dtype == torch.float32 for p in pipe.unet.parameters())
    only = TextToVideoPipeline.from_pretrained(tiny)
    only.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32, models=("unet",))
    assert any(p.dtype == torch.float8_e4m3fn for p in only.unet.parameters())
    assert all(p.dtype == torch.float32 for p in only.vae.parameters())
    with pytest.raises(ValueError, match="'encoder' is not one of this pipeline's models"):
        only.enable_layerwise_casting(models=["encoder"])


def test_group_offload_on_the_pipeline_gives_the_plain_video_exactly_and_keeps_each_model_in_its_folder(tiny,
                                                                                                     tmp_path):
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    plain = video(pipe)
    pipe.enable_group_offload("cpu", offload_to_disk_path=tmp_path)
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["text_encoder", "unet", "vae"]
        assert all(any(p.iterdir()) for p in tmp_path.iterdir())  # each model's weights in its own files
        assert torch.equal(video(pipe), plain)
    finally:
        pipe.disable_group_offload()
    assert torch.equal(video(pipe), plain)
