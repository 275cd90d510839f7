"""diffusers' callback arguments on the shared loop: ``callback_on_step_end`` with the tensors it asks for (and the
text context and guidance it may change for the next steps), the legacy ``callback`` / ``callback_steps`` with
diffusers' deprecation warning, ``pipe.num_timesteps``, and ``cross_attention_kwargs={"scale": s}`` reaching the
LoRA layers for one call only.

The expected runs are built from the public loop, ``pipe.denoise``, over parts of the schedule: DDIM with eta 0
keeps no state between steps, so two calls over timesteps[:k] and timesteps[k:] are one run whose context changes
at step k; the frames must then be equal exactly (same operations, same order)."""

from __future__ import annotations

import pytest
import torch

from t2vlab import VideoToVideoPipeline
from t2vlab.lora import add_lora, lora_layers, lora_targets
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 5
KW = dict(num_frames=2, num_inference_steps=STEPS, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=5)  # DDIM, the checkpoint's sampler: no state carried between steps


def run(pipe, prompt="a red circle", **kw):
    return pipe(prompt, generator=torch.Generator().manual_seed(0), **{**KW, **kw}).frames


def by_hand(pipe, contexts):
    """The loop run in pieces: ``contexts`` [(steps, context, guidance scale)], from the call's own noise."""
    pipe.scheduler.set_timesteps(STEPS)
    x = pipe.prepare_latents(1, 2, 64, 64, torch.float32, "cpu", torch.Generator().manual_seed(0))
    done = 0
    for steps, context, scale in contexts:
        x = pipe.denoise(x, context, pipe.scheduler.timesteps[done:done + steps], scale)
        done += steps
    return x


# ------------------------------------------------------------------------------ what the callback sees
def test_the_callback_sees_the_tensors_it_names_and_an_unknown_name_is_refused(pipe):
    seen = []
    run(pipe, callback_on_step_end=lambda p, i, t, kw: seen.append(dict(kw)) or {})
    assert set(seen[0]) == {"latents", "pred_original_sample"}  # the default: diffusers' "latents", and our x0
    seen.clear()
    names = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    run(pipe, callback_on_step_end=lambda p, i, t, kw: seen.append(dict(kw)) or {},
        callback_on_step_end_tensor_inputs=names)
    cond, uncond = pipe.encode_prompt("a red circle", "cpu")
    assert len(seen) == STEPS and list(seen[0]) == names
    assert torch.equal(seen[0]["prompt_embeds"], torch.cat([uncond, cond]))  # the context, [uncond; cond]
    assert torch.equal(seen[0]["negative_prompt_embeds"], uncond)
    unguided = []
    run(pipe, guidance_scale=1.0, callback_on_step_end=lambda p, i, t, kw: unguided.append(dict(kw)) or {},
        callback_on_step_end_tensor_inputs=names)
    assert unguided[0]["negative_prompt_embeds"] is None and torch.equal(unguided[0]["prompt_embeds"], cond)
    assert pipe._callback_tensor_inputs == ("latents", "prompt_embeds", "negative_prompt_embeds",
                                            "pred_original_sample")
    with pytest.raises(ValueError, match=r"'noise_pred' is not one of \['latents', 'prompt_embeds'"):
        run(pipe, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["latents", "noise_pred"])


def test_num_timesteps_and_the_guidance_scale_are_the_running_loops(pipe):
    seen = []
    run(pipe, guidance_scale=7.0, callback_on_step_end=lambda p, i, t, kw: seen.append(
        (p.num_timesteps, p.guidance_scale, p.do_classifier_free_guidance)) or {})
    assert seen == [(STEPS, 7.0, True)] * STEPS and pipe.num_timesteps == STEPS


# --------------------------------------------------------------------------- what the callback changes
def test_new_prompt_embeds_from_the_callback_are_the_context_of_the_next_steps(pipe):
    a, b = (torch.cat(pipe.encode_prompt(text, "cpu")[::-1]) for text in ("a red circle", "blue"))

    def switch(p, i, t, kw):
        return {"prompt_embeds": b} if i == 1 else {}

    got = run(pipe, callback_on_step_end=switch, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    assert torch.equal(got, by_hand(pipe, [(2, a, 9.0), (STEPS - 2, b, 9.0)]))
    assert not torch.equal(got, run(pipe))


def test_a_new_negative_is_the_uncond_half_of_the_context(pipe):
    cond, uncond = pipe.encode_prompt("a red circle", "cpu")
    other = pipe.encode_prompt("blurry", "cpu")[0]

    def switch(p, i, t, kw):
        return {**kw, "negative_prompt_embeds": other} if i == 2 else kw  # kw back unchanged changes nothing

    got = run(pipe, callback_on_step_end=switch, callback_on_step_end_tensor_inputs=list(pipe._callback_tensor_inputs))
    expected = by_hand(pipe, [(3, torch.cat([uncond, cond]), 9.0), (STEPS - 3, torch.cat([other, cond]), 9.0)])
    assert torch.equal(got, expected)


def test_diffusers_dynamic_guidance_recipe_runs_unchanged(pipe):
    """The recipe from diffusers' callback docs: after 40% of the steps keep the cond half and stop guidance."""
    def callback_dynamic_cfg(pipe, step_index, timestep, callback_kwargs):
        if step_index == int(pipe.num_timesteps * 0.4):
            prompt_embeds = callback_kwargs["prompt_embeds"]
            prompt_embeds = prompt_embeds.chunk(2)[-1]
            pipe._guidance_scale = 0.0
            callback_kwargs["prompt_embeds"] = prompt_embeds
        return callback_kwargs

    got = run(pipe, callback_on_step_end=callback_dynamic_cfg, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    cond, uncond = pipe.encode_prompt("a red circle", "cpu")
    assert torch.equal(got, by_hand(pipe, [(3, torch.cat([uncond, cond]), 9.0), (STEPS - 3, cond, 0.0)]))


def test_embeds_of_the_wrong_shape_from_the_callback_are_refused_with_what_to_do(pipe):
    def half(p, i, t, kw):
        return {"prompt_embeds": kw["prompt_embeds"].chunk(2)[1]}

    with pytest.raises(ValueError, match=r"prompt_embeds of shape \(1, 77, 32\); expected .*\(2, 77, 32\).*"
                                         r"pipe._guidance_scale = 0.0"):
        run(pipe, callback_on_step_end=half, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    with pytest.raises(ValueError, match="returned negative_prompt_embeds, but this call has none to replace"):
        run(pipe, guidance_scale=1.0, callback_on_step_end=lambda p, i, t, kw: {"negative_prompt_embeds":
                                                                               torch.zeros(1, 77, 32)})


# ---------------------------------------------------------------------------------- the legacy callback
def test_the_legacy_callback_runs_every_callback_steps_with_diffusers_warning(pipe):
    steps, latents = [], []
    with pytest.warns(FutureWarning, match=r"The `callback` argument is deprecated and will be removed in version "
                                           r"1.0.0. Passing `callback` as an input argument to `__call__` is "
                                           r"deprecated, consider using `callback_on_step_end`"):
        run(pipe, callback=lambda i, t, x: steps.append((i, int(t))) or latents.append(x.clone()))
    ends = []
    run(pipe, callback_on_step_end=lambda p, i, t, kw: ends.append(kw["latents"].clone()) or {})
    assert [i for i, _ in steps] == list(range(STEPS)) and [t for _, t in steps] == pipe.scheduler.timesteps.tolist()
    assert all(torch.equal(a, b) for a, b in zip(latents, ends))  # the latents after each step
    every = []
    with pytest.warns(FutureWarning, match="The `callback_steps` argument is deprecated"):
        run(pipe, callback=lambda i, t, x: every.append(i), callback_steps=2)
    assert every == [0, 2, 4]
    with pytest.raises(ValueError, match="callback_steps must be a positive integer, got 0"):
        run(pipe, callback=lambda *a: None, callback_steps=0)
    with pytest.raises(ValueError, match="callback must be callable"):
        run(pipe, callback="print")


def test_video_to_video_takes_the_same_callbacks(pipe):
    v2v = VideoToVideoPipeline.from_pipe(pipe)
    z = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    seen = []
    with pytest.warns(FutureWarning):
        v2v("a", video=z, strength=0.6, num_inference_steps=5, output_type="latent",
            callback=lambda i, t, x: seen.append(i), callback_on_step_end=lambda p, i, t, kw: seen.append(
                tuple(kw)) or {}, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert seen == [("latents", "prompt_embeds"), 0, ("latents", "prompt_embeds"), 1, ("latents", "prompt_embeds"), 2]


# --------------------------------------------------------------------------------- cross_attention_kwargs
@pytest.fixture
def lora_pipe():
    pipe = tiny_pipe(seed=5)
    add_lora(pipe.unet, lora_targets(pipe.unet), rank=2, adapter_name="style")
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for layer in lora_layers(pipe.unet).values():  # B starts at zero: give the adapter an effect
            layer.lora_B["style"].weight.copy_(torch.randn(layer.lora_B["style"].weight.shape, generator=g) * 0.3)
    return pipe


def test_a_lora_scale_in_cross_attention_kwargs_acts_for_that_call_only(lora_pipe):
    plain_lora = run(lora_pipe)
    weights = {path: dict(layer.scale) for path, layer in lora_layers(lora_pipe.unet).items()}
    scaled = run(lora_pipe, cross_attention_kwargs={"scale": 0.7})
    assert {path: layer.scale for path, layer in lora_layers(lora_pipe.unet).items()} == weights  # put back exactly
    assert torch.equal(run(lora_pipe), plain_lora)  # only for that call
    lora_pipe.set_lora_scale(0.7)
    assert torch.equal(scaled, run(lora_pipe))  # the same as setting the adapter's weight to 0.7
    assert not torch.equal(scaled, plain_lora)
    off = run(lora_pipe, cross_attention_kwargs={"scale": 0.0})
    lora_pipe.unload_lora_weights()
    assert torch.equal(off, run(lora_pipe))  # scale 0: the plain UNet's numbers


def test_cross_attention_kwargs_other_than_scale_and_a_fused_lora_are_refused(lora_pipe):
    with pytest.raises(ValueError, match="cross_attention_kwargs: 'attention_mask' is not used by this pipeline"):
        run(lora_pipe, cross_attention_kwargs={"attention_mask": None})
    lora_pipe.fuse_lora()
    with pytest.raises(ValueError, match=r"scale'\]=0.5: the LoRA is fused into the UNet's weights"):
        run(lora_pipe, cross_attention_kwargs={"scale": 0.5})
    run(lora_pipe, cross_attention_kwargs={"scale": 1.0})  # 1 changes nothing: accepted
