"""The pipeline with a consistency-distilled UNet: a guidance-embedded UNet (``time_cond_proj_dim``) runs once
per step, without classifier-free guidance, w = guidance_scale given as ``timestep_cond``; the guidance
embedding T2V-Turbo's UNet adds (``add_guidance_embedding``); the samplers the distilled adapters are
recommended with. The adapters themselves: tests/test_lora.py; against diffusers: tests/parity/."""

from __future__ import annotations

import pytest
import torch

from t2vlab import TextToVideoPipeline, UNet3DConditionModel
from t2vlab.schedulers import from_name
from t2vlab.techniques.consistency import add_guidance_embedding, guidance_scale_embedding
from t2vlab.weights import TINY_UNET

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = dict(prompt="a red circle moving left", num_frames=2, height=32, width=32, num_inference_steps=3)


@pytest.fixture
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    add_guidance_embedding(p.unet, 16)
    return p


def unet_calls(unet):
    """The list that every UNet call appends (sample, timestep_cond) to, and the hook's handle."""
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0], kwargs.get("timestep_cond")))

    return calls, unet.register_forward_pre_hook(record, with_kwargs=True)


def test_a_guidance_embedded_unet_runs_once_per_step_with_w_as_its_condition(pipe):
    calls, handle = unet_calls(pipe.unet)
    latents = pipe(**ARGS, guidance_scale=7.5, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    handle.remove()
    assert len(calls) == 3 and all(x.shape[0] == 1 for x, _ in calls)  # one pass per step, no [uncond, cond]
    w = guidance_scale_embedding(torch.tensor([7.5]), 16)
    assert all(torch.equal(cond, w) for _, cond in calls)

    # the same loop written out: the text once, the UNet once per step with w, the scheduler's step
    cond, uncond = pipe.encode_prompt(ARGS["prompt"], "cpu", do_classifier_free_guidance=False)
    assert uncond is None
    pipe.scheduler.set_timesteps(3)
    x = pipe.prepare_latents(1, 2, 32, 32, cond.dtype, "cpu", torch.Generator().manual_seed(0))
    for t in pipe.scheduler.timesteps:
        with torch.no_grad():
            eps = pipe.unet(x, t, cond, timestep_cond=w)
        x, _ = pipe.step(eps, t, x)
    assert torch.equal(latents, x)
    other = pipe(**ARGS, guidance_scale=2.0, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert not torch.equal(other, latents)  # w reaches the UNet


def test_a_guidance_embedded_pipeline_needs_no_negative_prompt(pipe):
    cond, _ = pipe.encode_prompt(ARGS["prompt"], "cpu", do_classifier_free_guidance=False)
    bare = TextToVideoPipeline(pipe.unet, pipe.vae, None, None, pipe.scheduler)
    bare.set_progress_bar_config(disable=True)
    args = {k: v for k, v in ARGS.items() if k != "prompt"}
    frames = bare(prompt_embeds=cond, guidance_scale=7.5, generator=torch.Generator().manual_seed(0), **args).frames
    assert frames.shape == (1, 2, 32, 32, 3)
    assert set(pipe.warm_up(32, 32, 2, guidance_scale=7.5)) == {"unet", "vae"}  # one pass, w as the condition


def test_the_guidance_embedding_is_drawn_from_its_seed_and_saved_with_the_unet(tmp_path):
    def unet():
        torch.manual_seed(0)
        return UNet3DConditionModel.from_config(TINY_UNET)

    a, b, c = add_guidance_embedding(unet(), 16), add_guidance_embedding(unet(), 16), add_guidance_embedding(
        unet(), 16, seed=1)
    w = a.time_embedding.cond_proj.weight
    assert w.shape == (32, 16) and torch.equal(w, b.time_embedding.cond_proj.weight)
    assert not torch.equal(w, c.time_embedding.cond_proj.weight) and w.abs().max() <= 16**-0.5  # nn.Linear's bound
    assert a.config.time_cond_proj_dim == 16
    with pytest.raises(ValueError, match="has a guidance embedding already"):
        add_guidance_embedding(a, 16)
    shared = unet()
    twin = UNet3DConditionModel.from_config(shared.config)  # the same config object
    add_guidance_embedding(shared, 16)
    assert twin.config.time_cond_proj_dim is None  # the other UNet's config is left alone
    a.save_pretrained(tmp_path / "unet")
    again = UNet3DConditionModel.from_pretrained(tmp_path / "unet")
    assert again.config.time_cond_proj_dim == 16 and torch.equal(again.time_embedding.cond_proj.weight, w)


def test_the_distilled_adapters_samplers_are_named():
    mcm, turbo = from_name("lcm-mcm"), from_name("lcm-t2v-turbo")
    assert mcm.config.timestep_scaling == 4.0 and mcm.config.timestep_selection == "even"
    turbo.set_timesteps(4)
    assert turbo.timesteps.tolist() == [999, 759, 519, 279] and turbo.config.timestep_scaling == 10.0


def test_step_callbacks_see_the_single_context_of_a_guidance_embedded_unet(pipe):
    """A guidance-embedded UNet runs on the cond context alone, whatever the scale: a step callback asking for
    the embeddings gets (1, 77, D), not an [uncond; cond] pair, and may hand them back changed."""
    seen = []

    def callback(p, i, t, tensors):
        seen.append((tensors["prompt_embeds"].shape, p.do_classifier_free_guidance))
        return {"prompt_embeds": tensors["prompt_embeds"] * 1.0}

    pipe(**ARGS, guidance_scale=7.5, output_type="latent", callback_on_step_end=callback,
         callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert seen and all(shape[0] == 1 and not two_pass for shape, two_pass in seen)
