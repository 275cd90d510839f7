"""The pipeline interface against diffusers 0.42.1: a pipeline saved with our ``save_pretrained`` (a variant too, a
fused LoRA, one converted from the original layout, one without a text encoder) loads in diffusers'
TextToVideoSDPipeline with the same frames; the legacy ``callback`` sees diffusers' latents at every step;
``cross_attention_kwargs={"scale": s}`` equals peft's LoRA scaled by s; fused projections equal diffusers' fused UNet.

Tolerances, as tests/parity/test_pipeline_parity.py states them: 1e-4 absolute on frames in [0, 1] (every
component agrees to ~1e-6 relative; a few guided steps amplify that ninefold; measured here 1.2e-6); latents,
which are not bounded, 1e-4 relative to their largest value (the same argument; measured: equal, 0.0, at every
step of the tiny model); a UNet call 1e-5 relative (the component parity bound, tests/parity/test_unet_parity.py).
The fp16 variant: both sides read the same float16 files cast to float32, so the same 1e-4.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.lora import add_lora, lora_layers, lora_state_dict, lora_targets
from t2vlab.original import make_tiny_original_checkpoint
from tests.helpers import randomize_, rel_err, tiny_pipe

diffusers = pytest.importorskip("diffusers")
pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("one_thread")]

ATOL = 1e-4
ARGS = dict(prompt="a red circle moving left", negative_prompt="blurry", num_frames=3, height=32, width=48,
            num_inference_steps=4, guidance_scale=9.0)


@pytest.fixture(scope="module")
def pipe():
    """The tiny pipeline with every model re-drawn: no zero-initialised layer hides a path."""
    p = tiny_pipe(seed=11, std=0.2)
    randomize_(p.vae, seed=12, std=0.2)
    randomize_(p.text_encoder, seed=13, std=0.2)
    return p


def frames(p, **kw):
    p.set_progress_bar_config(disable=True)
    return p(**{**ARGS, **kw}, generator=torch.Generator().manual_seed(0)).frames


def read_index(folder):
    return json.loads((folder / "model_index.json").read_text())


def theirs(folder, **kw):
    ref = diffusers.TextToVideoSDPipeline.from_pretrained(folder, **kw)
    ref.set_progress_bar_config(disable=True)
    return ref


# ------------------------------------------------------------------------------------------ save_pretrained
def test_a_saved_pipeline_and_its_fp16_variant_load_in_diffusers_with_the_same_frames(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "saved")
    expected = frames(pipe)
    assert expected.std() > 0.01  # a non-trivial video
    assert np.abs(frames(theirs(folder)) - expected).max() <= ATOL
    np.testing.assert_array_equal(frames(TextToVideoPipeline.from_pretrained(folder)), expected)  # back: exactly
    pickled = pipe.save_pretrained(tmp_path / "bin", safe_serialization=False)  # .bin, as diffusers writes them
    assert np.abs(frames(theirs(pickled)) - expected).max() <= ATOL

    half = TextToVideoPipeline.from_pipe(tiny_pipe(seed=11, std=0.2))
    for model, seed in ((half.vae, 12), (half.text_encoder, 13)):
        randomize_(model, seed=seed, std=0.2)
    half.to(torch.float16).save_pretrained(folder, variant="fp16")  # beside the float32 files, as on the Hub
    ours = TextToVideoPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float32)
    ref = theirs(folder, variant="fp16", torch_dtype=torch.float32)
    assert np.abs(frames(ref) - frames(ours)).max() <= ATOL
    assert np.abs(frames(ours) - expected).max() > 0  # the fp16 rounding was really read
    assert np.abs(frames(theirs(folder)) - expected).max() <= ATOL  # the plain files untouched


def test_a_fused_lora_and_the_original_layout_are_saved_whole_for_diffusers(tmp_path):
    lora = tiny_pipe(seed=11, std=0.2)
    add_lora(lora.unet, lora_targets(lora.unet), rank=2, adapter_name="style")
    with torch.no_grad():
        for layer in lora_layers(lora.unet).values():
            layer.lora_B["style"].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
    lora.fuse_lora()
    folder = lora.save_pretrained(tmp_path / "fused")
    assert np.abs(frames(theirs(folder)) - frames(lora)).max() <= ATOL

    original = TextToVideoPipeline.from_pretrained(make_tiny_original_checkpoint(tmp_path / "original"))
    randomize_(original.unet, seed=5, std=0.2)  # the tiny original's temporal layers start at zero
    folder = original.save_pretrained(tmp_path / "published")
    assert np.abs(frames(theirs(folder)) - frames(original)).max() <= ATOL


def test_a_pipeline_saved_without_a_text_encoder_loads_in_diffusers_without_one(pipe, tmp_path):
    cond, uncond = pipe.encode_prompt(ARGS["prompt"], "cpu", negative_prompt=ARGS["negative_prompt"])
    bare = TextToVideoPipeline.from_pipe(pipe, text_encoder=None, tokenizer=None)
    folder = bare.save_pretrained(tmp_path / "bare")
    ref = theirs(folder, text_encoder=None, tokenizer=None)  # diffusers asks for absent components by name (its
    assert ref.text_encoder is None and ref.tokenizer is None  # text-to-video pipeline has no optional ones); we don't
    written = tmp_path / "by-diffusers"  # diffusers writes such a pipeline's model_index.json as we do
    ref.save_pretrained(written)
    assert [read_index(f)[k] for f in (written, folder) for k in ("text_encoder", "tokenizer")] == [[None, None]] * 4
    embeds = dict(prompt=None, negative_prompt=None, prompt_embeds=cond, negative_prompt_embeds=uncond)
    assert np.abs(frames(ref, **embeds) - frames(bare, **embeds)).max() <= ATOL


# -------------------------------------------------------------------------------------------- callbacks
def test_the_legacy_callback_sees_diffusers_latents_at_every_step(pipe, tmp_path):
    ref = theirs(pipe.save_pretrained(tmp_path / "saved"))
    seen = {"ours": [], "theirs": []}
    for side, p in (("ours", pipe), ("theirs", ref)):
        with pytest.warns(FutureWarning) if side == "ours" else contextlib.nullcontext():  # theirs does not warn
            frames(p, callback=lambda i, t, x, s=side: seen[s].append((i, int(t), x.clone())), callback_steps=1)
    assert [(i, t) for i, t, _ in seen["ours"]] == [(i, t) for i, t, _ in seen["theirs"]]
    assert len(seen["ours"]) == ARGS["num_inference_steps"]
    for (_, _, a), (_, _, b) in zip(seen["ours"], seen["theirs"]):
        assert rel_err(a, b) <= 1e-4


# ------------------------------------------------------------------------------------ cross_attention_kwargs
def test_a_lora_scale_for_the_call_equals_peft_scaled_by_it(pipe, tmp_path):
    """diffusers 0.42.1's UNet3D passes cross_attention_kwargs on without scaling the LoRA (its 2D UNet does it
    with peft's scale_lora_layers): the oracle is that, on peft's LoRA layers, with our adapter's weights."""
    from diffusers.utils.peft_utils import scale_lora_layers, unscale_lora_layers
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    peft = pytest.importorskip("peft")
    assert peft
    folder = pipe.save_pretrained(tmp_path / "saved")
    ours = TextToVideoPipeline.from_pretrained(folder)
    add_lora(ours.unet, lora_targets(ours.unet), rank=4, alpha=8, adapter_name="mine")
    with torch.no_grad():
        for layer in lora_layers(ours.unet).values():
            layer.lora_B["mine"].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(6))
    ref = theirs(folder)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                            ref.unet)
    assert not set_peft_model_state_dict(ref.unet, lora_state_dict(ours.unet, "mine")).unexpected_keys
    ref.unet.eval()
    full = frames(ref)
    scale_lora_layers(ref.unet, 0.7)
    expected = frames(ref)
    unscale_lora_layers(ref.unet, 0.7)
    assert np.abs(expected - full).max() > 1e-3  # the scale changes the video
    assert np.abs(frames(ours, cross_attention_kwargs={"scale": 0.7}) - expected).max() <= ATOL
    assert np.abs(frames(ours) - full).max() <= ATOL  # for that call only


# ------------------------------------------------------------------------------------------ fused projections
def test_our_fused_unet_equals_diffusers_fused_unet(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "saved")
    ref = diffusers.UNet3DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    ours = TextToVideoPipeline.from_pretrained(folder).unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 4, 6, generator=g)
    text = torch.randn(2, 77, ours.config.cross_attention_dim, generator=g)
    t = torch.tensor([500, 500])
    ref.fuse_qkv_projections()
    ours.fuse_qkv_projections()
    with torch.no_grad():
        assert rel_err(ours(x, t, text), ref(x, t, text).sample) <= 1e-5
