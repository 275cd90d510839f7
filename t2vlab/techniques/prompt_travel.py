"""Prompt travel: the text changes over the video.

    pipe({0: "a red square moving right", 23: "a blue square moving right"}, num_frames=24)

``prompt`` (and ``negative_prompt``) may be a dict {frame index: text}. Each keyframe's text is
encoded once; every frame gets its own embedding, interpolated between the nearest keyframes
before and after it (linear by default: frame f between keyframes a < b gets
(1 - w) e_a + w e_b, w = (f - a) / (b - a)). Frames before the first keyframe take its text, frames
after the last take the last one's. The UNet then reads one text per frame: the context is
(videos, frames, tokens, dim) instead of (videos, tokens, dim) (``UNet3DConditionModel.forward``).

Another rule: ``pipe.prompt_interpolation_callback = f`` (or ``enable_free_noise(...,
prompt_interpolation_callback=f)``, diffusers' name), where ``f(start_frame, end_frame, start, end)``
gets the two keyframes' embeddings (1, tokens, dim) and returns the frames start..end inclusive,
(end_frame - start_frame + 1, tokens, dim). Works with and without FreeNoise.

Where it plugs in: the pipeline's step 1 (``__call__``) encodes with ``encode_prompt_travel`` when
``is_travel``; the UNet's hook point is its context, which may be (B, F, L, D) instead of (B, L, D).
"""

from __future__ import annotations

import torch

from .prompt_weighting import pad_chunks


def lerp_embeddings(start_frame, end_frame, start, end):
    """Linear interpolation: (end_frame - start_frame + 1, tokens, dim), from ``start`` to ``end`` (each
    (1, tokens, dim)) inclusive."""
    w = torch.linspace(0, 1, end_frame - start_frame + 1, dtype=start.dtype, device=start.device)[:, None, None]
    return (1 - w) * start + w * end


def frame_embeddings(keyframes, num_frames, interpolate=None):
    """{frame: embedding (tokens, dim)} -> one embedding per frame (num_frames, tokens, dim)."""
    interpolate = interpolate or lerp_embeddings
    frames = sorted(keyframes)
    first, last = keyframes[frames[0]], keyframes[frames[-1]]
    out = first.new_empty((num_frames, *first.shape))
    out[:frames[0] + 1] = first  # before the first keyframe: its text
    out[frames[-1]:] = last  # after the last: its text
    for a, b in zip(frames, frames[1:]):
        segment = interpolate(a, b, keyframes[a][None], keyframes[b][None])
        if tuple(segment.shape) != (b - a + 1, *first.shape):
            raise ValueError(f"prompt_interpolation_callback returned shape {tuple(segment.shape)} for frames "
                             f"{a}..{b}; expected {(b - a + 1, *first.shape)}")
        out[a:b + 1] = segment
    return out


def is_travel(prompt, negative_prompt=None) -> bool:
    """Whether a call asks for prompt travel: either prompt is a dict {frame: text}."""
    return isinstance(prompt, dict) or isinstance(negative_prompt, dict)


def as_keyframes(prompt):
    """A dict as it is; a string (or a list of one string) as {0: text}; None as {0: ""}."""
    if isinstance(prompt, dict):
        return prompt
    if isinstance(prompt, (list, tuple)):
        (prompt,) = prompt
    return {0: "" if prompt is None else prompt}


def encode_prompt_travel(pipe, prompt, negative_prompt, num_frames, device, num_videos_per_prompt=1,
                         do_classifier_free_guidance=True, clip_skip=None, interpolate=None, prompt_syntax="plain",
                         truncate_long_prompts=False):
    """(cond, uncond) text embeddings per frame, each (num_videos_per_prompt, num_frames, tokens, dim);
    uncond is None without guidance. Either prompt may be a dict {frame: text} or a string. Weighted and long
    prompts are read as ``pipe.encode_prompt`` reads them (``prompt_syntax``, ``truncate_long_prompts``): all
    keyframes of one side get the same number of chunks, and the side with fewer is padded with the empty
    prompt's chunks (``prompt_weighting.pad_chunks``), so that interpolation and guidance see one length."""

    def per_frame(texts):
        keyframes = as_keyframes(texts)
        embeds, _ = pipe.encode_prompt(list(keyframes.values()), device, do_classifier_free_guidance=False,
                                       clip_skip=clip_skip, prompt_syntax=prompt_syntax,
                                       truncate_long_prompts=truncate_long_prompts)
        frames = frame_embeddings(dict(zip(keyframes, embeds)), num_frames, interpolate)
        return frames[None].repeat(num_videos_per_prompt, 1, 1, 1)

    cond = per_frame(prompt)
    uncond = per_frame(negative_prompt) if do_classifier_free_guidance else None
    if uncond is not None and uncond.shape[2] != cond.shape[2]:  # long prompts: as many chunks on both sides
        empty, _ = pipe.encode_prompt("", device, do_classifier_free_guidance=False, clip_skip=clip_skip)
        padded = pad_chunks([cond.flatten(0, 1), uncond.flatten(0, 1)], empty)
        cond, uncond = (e.unflatten(0, cond.shape[:2]) for e in padded)
    return cond, uncond
