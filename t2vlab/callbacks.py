"""The user's per-step callbacks, as diffusers defines them, as one step hook of the shared loop (``pipe.denoise``).

- ``callback_on_step_end(pipe, i, t, tensors) -> dict``: after every step, ``tensors`` holds the names listed in
  ``callback_on_step_end_tensor_inputs`` (each one of ``pipe._callback_tensor_inputs``):

      "latents"                 x_{t-1} (B, 4, F, h, w), after the step
      "prompt_embeds"           the text context the UNet reads: [uncond; cond] stacked under guidance (2B, L, D),
                                as diffusers' pipelines hold it ((2B, F, L, D) with a text per frame)
      "negative_prompt_embeds"  uncond (B, L, D), the first half of that context; None without guidance
      "pred_original_sample"    the scheduler's estimate of x_0 (ours; diffusers' text-to-video has none)

  What the returned dict holds replaces them from the next step on: "latents" the latents; "prompt_embeds" the
  whole context; "negative_prompt_embeds" (when it is not the tensor it was given) the uncond half of the context
  (diffusers' pipelines pass it but never read it back). Setting ``pipe._guidance_scale`` in the callback changes
  the guidance from the next step on, as in diffusers, so its "dynamic classifier-free guidance" recipe (keep the
  cond half of prompt_embeds, set ``pipe._guidance_scale = 0.0``) runs unchanged.
- the legacy ``callback(step, timestep, latents)``, every ``callback_steps`` steps: deprecated by diffusers, and
  warned about with its words.

``Conditioning`` is what the loop reads at every step (the context and the guidance scale): this hook holds the
same object, which is how a change it makes reaches the next step without a second copy of the loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .guards import check_callback_embeds, check_callback_update

DEPRECATED = ("The `{0}` argument is deprecated and will be removed in version 1.0.0. Passing `{0}` as an input "
              "argument to `__call__` is deprecated, consider using `callback_on_step_end`")  # diffusers' words
DEFAULT_TENSOR_INPUTS = ("latents", "pred_original_sample")


@dataclass
class Conditioning:
    """What the UNet is conditioned on at each step of ``denoise``: the text ``context`` ([uncond; cond] under
    guidance) and ``guidance_scale`` (> 1: classifier-free guidance, unless ``guidance_embedded``: a UNet that
    takes the scale as an input runs once on the cond context). Read afresh at every step."""

    context: torch.Tensor
    guidance_scale: float
    guidance_embedded: bool = False

    @property
    def guided(self) -> bool:
        """Whether the context is [uncond; cond] and each step runs the UNet on both halves."""
        return self.guidance_scale > 1.0 and not self.guidance_embedded

    @property
    def negative(self):
        """The uncond half of the context under guidance, else None."""
        return self.context.chunk(2)[0] if self.guided else None

    @property
    def dtype(self):
        return self.context.dtype


def as_conditioning(context, guidance_scale, guidance_embedded=False) -> Conditioning:
    """``context`` as it is if it is a Conditioning already, else wrapped with ``guidance_scale``."""
    if isinstance(context, Conditioning):
        return context
    return Conditioning(context, guidance_scale, guidance_embedded)


class StepCallbacks:
    """The user's callbacks of one call: ``callback_on_step_end`` with the tensors it asked for, and the legacy
    ``callback`` every ``callback_steps`` steps (warned about once, here). ``hook(pipe, conditioning)`` is the step
    hook of ``denoise`` that runs them (checked by ``guards.check_step_callbacks`` before)."""

    def __init__(self, callback_on_step_end=None, tensor_inputs=None, callback=None, callback_steps=None):
        for name, given in (("callback", callback), ("callback_steps", callback_steps)):
            if given is not None:
                warnings.warn(DEPRECATED.format(name), FutureWarning, stacklevel=3)
        self.on_step_end = callback_on_step_end
        self.tensor_inputs = tuple(DEFAULT_TENSOR_INPUTS if tensor_inputs is None else tensor_inputs)
        self.callback, self.callback_steps = callback, callback_steps or 1

    @classmethod
    def of(cls, callback_on_step_end):
        """A call's ``StepCallbacks`` as they are, or a plain ``callback_on_step_end`` (or None) wrapped."""
        return callback_on_step_end if isinstance(callback_on_step_end, cls) else cls(callback_on_step_end)

    def __bool__(self):
        return self.on_step_end is not None or self.callback is not None

    def hook(self, pipe, conditioning=None):
        """``hook(i, t, x, x0) -> x`` for ``denoise``; ``conditioning``: the loop's (prompt_embeds are its context)."""
        def run(i, t, x, x0):
            if self.on_step_end is not None:
                x = self.step_end(pipe, conditioning, i, t, x, x0)
            if self.callback is not None and i % self.callback_steps == 0:
                self.callback(i // pipe.scheduler.order, t, x)
            return x

        return run

    def step_end(self, pipe, conditioning, i, t, x, x0):
        seen = {"latents": x, "pred_original_sample": x0}
        if conditioning is not None:
            seen.update(prompt_embeds=conditioning.context, negative_prompt_embeds=conditioning.negative)
        given = {name: seen[name] for name in self.tensor_inputs if name in seen}
        update = self.on_step_end(pipe, i, t, given)
        x = check_callback_update(update, x)
        if conditioning is not None and isinstance(update, dict):
            self.apply(update, given, conditioning, pipe, x)
        return x

    @staticmethod
    def apply(update, given, conditioning, pipe, x):
        """The context and guidance for the next steps, as the callback left them."""
        if pipe.guidance_scale != conditioning.guidance_scale:  # the callback set pipe._guidance_scale
            conditioning.guidance_scale = pipe.guidance_scale
        context = update.get("prompt_embeds", conditioning.context)
        negative = update.get("negative_prompt_embeds", given.get("negative_prompt_embeds"))
        if negative is not None and negative is not given.get("negative_prompt_embeds"):
            check_callback_embeds("negative_prompt_embeds", negative, conditioning.negative)
            context = torch.cat([negative, context.chunk(2)[1]])
        conditioning.context = check_callback_embeds("prompt_embeds", context, conditioning.context,
                                                     len(x) * (2 if conditioning.guided else 1))
