"""Notebook 06's exercises: the guidance rule, and the guided denoising loop from the pipeline's public steps."""

from __future__ import annotations

import types

import torch

from ..pipeline import TextToVideoPipeline
from ..schedulers import DDIMScheduler
from .core import Exercise, call, compare, generator, register


# ------------------------------------------------------------------- 06.guidance: classifier-free guidance
def guide(eps_u, eps_c, guidance_scale):
    """Classifier-free guidance: from the unconditional prediction eps_u towards the prompt's eps_c and beyond,
    eps_u + g (eps_c - eps_u). eps_u, eps_c (B, C, F, h, w); guidance_scale a float -> (B, C, F, h, w)."""
    return eps_u + guidance_scale * (eps_c - eps_u)


class _Replay(torch.nn.Module):
    """A stand-in UNet that answers every call on [x, x] with the predictions it was given, [eps_u, eps_c]."""

    dtype = torch.float32
    config = types.SimpleNamespace(time_cond_proj_dim=None)  # no guidance embedding: guidance is two passes

    def __init__(self, eps_u, eps_c):
        super().__init__()
        self.out = torch.cat([eps_u, eps_c])

    def forward(self, x, t, context, timestep_cond=None):
        return self.out


def check_guidance(fn):
    g = generator(6)
    eps_u, eps_c = torch.randn(1, 4, 3, 4, 4, generator=g), torch.randn(1, 4, 3, 4, 4, generator=g)
    x, context = torch.zeros_like(eps_u), torch.zeros(2, 5, 8)
    # the package's rule as the pipeline applies it (predict_noise, with a UNet that replays the two predictions)
    replay = _Replay(eps_u, eps_c)
    host = types.SimpleNamespace(scheduler=DDIMScheduler(), unet=replay, guidance_embedded=False)
    for method in ("classifier_free_guidance", "guidance_condition"):  # the pipeline's own, on this stand-in
        setattr(host, method, types.MethodType(getattr(TextToVideoPipeline, method), host))
    for scale in (3.0, 9.0):
        want = TextToVideoPipeline.predict_noise(host, replay, x, torch.tensor(500), context, scale)
        # one multiply-add in float32: compare's default tolerances
        compare(call(fn, eps_u, eps_c, scale), want, f"guide(eps_u, eps_c, {scale:g})", mistakes={
            "starting from eps_c: eps_c + g (eps_c - eps_u) overshoots by one step of (eps_c - eps_u)":
                eps_c + scale * (eps_c - eps_u),
            "with the difference the wrong way round, eps_u - eps_c: guidance pushes away from the prompt":
                eps_u + scale * (eps_u - eps_c),
            "without eps_u: g (eps_c - eps_u) alone is only the push, not the prediction": scale * (eps_c - eps_u),
            "with the two predictions swapped (eps_c + g (eps_u - eps_c))": eps_c + scale * (eps_u - eps_c),
        })


register(Exercise("06.guidance", "the classifier-free guidance rule", "guide", check_guidance, guide,
                  hint="eps_u + guidance_scale * (eps_c - eps_u)"))


# --------------------------------------------------------------- 06.guided_video: the whole loop, by hand
def guided_video(pipe, prompt, guidance_scale, steps, num_frames, height, width, negative_prompt="", seed=0):
    """A video from the pipeline's public steps, always with both UNet calls (so g = 0 and g = 1 work too):
    frames (F, H, W, 3) in [0, 1] of the one video."""
    cond, uncond = pipe.encode_prompt(prompt, pipe.device, negative_prompt=negative_prompt)  # (1, L, D) each
    context = torch.cat([uncond, cond])                                   # [uncond, cond]: the UNet batch's order
    pipe.scheduler.set_timesteps(steps, device=pipe.device)
    x = pipe.prepare_latents(1, num_frames, height, width, cond.dtype, pipe.device,
                             torch.Generator().manual_seed(seed))         # (1, 4, F, h, w)
    for t in pipe.scheduler.timesteps:
        x_in = pipe.scheduler.scale_model_input(torch.cat([x, x]), t)
        with torch.no_grad():
            eps_u, eps_c = pipe.unet(x_in, t, context).chunk(2)
        eps = eps_u + guidance_scale * (eps_c - eps_u)                     # classifier-free guidance
        x, _ = pipe.step(eps, t, x)                                        # (x_prev, x0)
    return pipe.decode_latents(x)[0]                                       # (F, H, W, 3)


def _toy():
    if not hasattr(_toy, "pipe"):
        _toy.pipe = TextToVideoPipeline.from_pretrained("toy")  # the trained toy model: a step in milliseconds
        _toy.pipe.set_progress_bar_config(disable=True)
    return _toy.pipe


SIZE = (4, 32, 32)  # frames, height, width: the checks' videos are small (the toy runs at any size), 3 steps
STEPS = 3


def _package_video(text, scale, negative_prompt=None, swapped=False):
    """The package's video (F, H, W, 3) for these settings, computed once per process: its pipeline, or with
    ``swapped`` its own denoising loop on a context stacked the wrong way round, [cond, uncond]."""
    key = (text, scale, negative_prompt, swapped)
    cache = _package_video.__dict__.setdefault("cache", {})
    if key not in cache:
        pipe = _toy()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        if swapped:
            cond, uncond = pipe.encode_prompt(text, pipe.device)
            pipe.scheduler.set_timesteps(STEPS)
            x = pipe.prepare_latents(1, *SIZE, torch.float32, pipe.device, torch.Generator().manual_seed(0))
            cache[key] = pipe.decode_latents(pipe.denoise(x, torch.cat([cond, uncond]), guidance_scale=scale))[0]
        else:
            cache[key] = pipe(text, num_frames=SIZE[0], height=SIZE[1], width=SIZE[2], num_inference_steps=STEPS,
                              guidance_scale=scale, negative_prompt=negative_prompt,
                              generator=torch.Generator().manual_seed(0), output_type="pt").frames[0]
    return cache[key]


def check_guided_video(fn):
    pipe = _toy()
    prompt, negative = "a red circle moving left", "a blue square moving right"
    package = _package_video
    # the same UNet calls on the same batches in the same order as the pipeline: equal up to float32 rounding of
    # the decode (1e-5 in [0, 1] pixels; a wrong loop differs by 0.01 or more)
    tol = dict(rtol=0, atol=1e-5)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    compare(call(fn, pipe, prompt, 9.0, STEPS, *SIZE), package(prompt, 9.0),
            f"guided_video(pipe, {prompt!r}, 9.0, ...)", mistakes={
                "with the context stacked [cond, uncond]: the UNet's two halves swapped, so guidance pushes away "
                "from the prompt": package(prompt, 9.0, swapped=True),
                "without guidance (the prompt's prediction alone, g = 1)": package(prompt, 1.0),
            }, **tol)
    compare(call(fn, pipe, prompt, 0.0, STEPS, *SIZE), package("", 1.0), f"guided_video(pipe, {prompt!r}, 0.0, ...)",
            mistakes={"skipping the unconditional call when g <= 1, as the pipeline does: here g = 0 must give the "
                      "empty prompt's video, the unconditional prediction alone": package(prompt, 1.0)}, **tol)
    compare(call(fn, pipe, prompt, 9.0, STEPS, *SIZE, negative_prompt=negative),
            package(prompt, 9.0, negative_prompt=negative), f"guided_video with negative_prompt={negative!r}",
            mistakes={"with the empty prompt where the negative prompt belongs": package(prompt, 9.0)}, **tol)


register(Exercise("06.guided_video", "the guided denoising loop, by hand", "guided_video", check_guided_video,
                  guided_video, hint="encode_prompt -> (cond, uncond); context = cat([uncond, cond]); set_timesteps; "
                                     "prepare_latents; for t: unet(cat([x, x]), t, context).chunk(2), the rule, "
                                     "pipe.step; decode_latents(x)[0]"))
