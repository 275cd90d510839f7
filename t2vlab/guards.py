"""What stands around a generation so that mistakes end in a clear message (docs/reliability.md).

None of this is the method; the pipeline calls it before and around its steps:

- ``check_generation_args``  every argument of ``pipe(...)``, before any work, naming the argument;
- ``explain_out_of_memory``  a context manager that turns running out of memory into an
                             ``OutOfMemoryError`` saying what was asked and which options would help;
- ``FiniteWatch``            a step hook of the denoising loop: stops at the first step whose latents
                             are NaN/inf (on a GPU it reads its flags every few steps, since a read
                             makes the CPU wait for the GPU);
- ``check_decoded``          the same for the decoded frames;
- ``check_callback_update``  what a ``callback_on_step_end`` may hand back (``check_callback_embeds``: the text);
- ``check_step_callbacks``, ``check_cross_attention_kwargs``, ``check_component``  diffusers' callback arguments,
                             ``cross_attention_kwargs`` and the components a call needs (a pipeline may lack some);
- ``check_video_to_video_args``, ``check_strength``, ``check_frames_shape``, ``check_video_latents``
                             the same for video-to-video (the pixels themselves are read and checked by
                             ``t2vlab.inputs.video_input`` / ``image_input``);
- ``check_keyframes_form``, ``check_keyframe_anchor``, ``check_extend_args``, ``check_interpolate_args``
                             keyframes, continuation (``pipe.extend``) and in-between frames (``pipe.interpolate``).
"""

from __future__ import annotations

import contextlib
import math

import torch

from . import checks
from .lora import lora_layers
from .techniques import repaint
from .techniques.interpolation import frames_after
from .techniques.prompt_weighting import SYNTAXES
from .weights import COMPONENTS, OPTIONAL_COMPONENTS

CHECK_EVERY = 8  # denoising steps between two reads of the latents' finiteness flags on a GPU
MAX_FRAMES = 1024  # the model was trained on 16 frames; more than this is a typo, not a video
MAX_VIDEOS = 256  # videos in one call (prompts x num_videos_per_prompt)
MAX_SIZE = 8192  # pixels along one side
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


class OutOfMemoryError(RuntimeError):
    """A generation ran out of (GPU or CPU) memory; the message gives the asked size and what would help."""


# ---------------------------------------------------------------------------------------- arguments
def check_size(height, width, num_frames, factor):
    """Frame size and count: positive integers, divisible by the VAE's factor, within sensible caps."""
    for name, v in (("height", height), ("width", width)):
        checks.positive_int(name, v)
        if v % factor:
            below, above = fitting_sizes(v, factor)
            raise ValueError(f"{name} must be divisible by {factor} (the VAE's downsampling), got {v}; "
                             f"{below} or {above} would work")
        if v > MAX_SIZE:
            raise ValueError(f"{name}={v} is beyond any sensible video size (at most {MAX_SIZE})")
    checks.positive_int("num_frames", num_frames)
    if num_frames > MAX_FRAMES:
        raise ValueError(f"num_frames={num_frames} is beyond any sensible video (at most {MAX_FRAMES})")


def check_sampling(num_inference_steps, guidance_scale, eta, noise_shared_ratio, generator, latents):
    checks.positive_int("num_inference_steps", num_inference_steps)
    checks.number("guidance_scale", guidance_scale, low=0)
    checks.number("eta", eta, low=0, high=1, hint=" (0: deterministic DDIM, 1: DDPM-like)")
    checks.number("noise_shared_ratio", noise_shared_ratio, low=0, high=1, high_open=True)
    if generator is not None and not isinstance(generator, torch.Generator) and not (
            isinstance(generator, list) and all(isinstance(g, torch.Generator) for g in generator)):
        raise ValueError(f"generator must be a torch.Generator or a list of them, got {generator!r:.80}")
    if latents is not None and not (torch.is_tensor(latents) and latents.is_floating_point()):
        raise ValueError(f"latents must be a float tensor, got {getattr(latents, 'dtype', type(latents).__name__)}")


def check_keyframes(name, keyframes, num_frames):
    """A prompt-travel dict {frame index: text}: not empty, integer keys in [0, num_frames), text values."""
    if not keyframes:
        raise ValueError(f"{name} is an empty dict; prompt travel needs at least one {{frame_index: text}}")
    for frame, text in keyframes.items():
        if not checks.is_integer(frame):
            raise ValueError(f"{name}: keyframe {frame!r} is not an integer frame index")
        if not 0 <= frame < num_frames:
            raise ValueError(f"{name}: keyframe {frame} is outside [0, num_frames={num_frames})")
        if not isinstance(text, str):
            raise ValueError(f"{name}: the text at keyframe {frame} must be a string, got {text!r:.80}")


def check_prompts(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, embed_dim, num_frames=1) -> int:
    """The text arguments; returns the number of prompts. A dict {frame: text} (prompt travel) is one
    prompt whose text changes over the video (``t2vlab.techniques.prompt_travel``)."""
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("pass either prompt or prompt_embeds, not both")
    if prompt is None and prompt_embeds is None:
        raise ValueError("prompt is missing (or pass prompt_embeds)")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("pass either negative_prompt or negative_prompt_embeds, not both")
    if prompt is not None:
        if isinstance(prompt, str):
            batch = 1
        elif isinstance(prompt, dict):
            check_keyframes("prompt", prompt, num_frames)
            batch = 1
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            batch = len(prompt)
        else:
            raise ValueError(f"prompt must be a string, a non-empty list of strings or a dict {{frame: text}}, "
                             f"got {prompt!r:.80}")
    else:
        if not torch.is_tensor(prompt_embeds) or prompt_embeds.ndim != 3 or not prompt_embeds.is_floating_point() \
                or prompt_embeds.shape[0] < 1 or prompt_embeds.shape[1] < 1 or prompt_embeds.shape[2] != embed_dim:
            raise ValueError(f"prompt_embeds must be a float tensor (batch, tokens, {embed_dim}), got "
                             f"{getattr(prompt_embeds, 'shape', type(prompt_embeds).__name__)} "
                             f"{getattr(prompt_embeds, 'dtype', '')}")
        batch = prompt_embeds.shape[0]
    if isinstance(negative_prompt, dict):
        check_keyframes("negative_prompt", negative_prompt, num_frames)
        if prompt is None or batch != 1:
            raise ValueError("negative_prompt: a dict {frame: text} goes with one text prompt (a string or a dict)")
    elif negative_prompt is not None and not isinstance(negative_prompt, str):
        if not (isinstance(negative_prompt, (list, tuple)) and all(isinstance(p, str) for p in negative_prompt)):
            raise ValueError(f"negative_prompt must be a string or a list of strings, got {negative_prompt!r:.80}")
        if len(negative_prompt) != batch:
            raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but prompt has {batch}")
    if negative_prompt_embeds is not None:
        if prompt_embeds is None or not torch.is_tensor(negative_prompt_embeds) or \
                negative_prompt_embeds.shape != prompt_embeds.shape or not negative_prompt_embeds.is_floating_point():
            want, got = getattr(prompt_embeds, "shape", None), getattr(negative_prompt_embeds, "shape", None)
            raise ValueError(f"negative_prompt_embeds must come with prompt_embeds and have its shape {want}, "
                             f"got {got}")
    return batch


def check_output(output_type, callback_on_step_end):
    if not isinstance(output_type, str) or output_type not in OUTPUT_TYPES:  # `in` on an array compares elementwise
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r:.80}")
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise ValueError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")


def check_video_count(videos, generator, what):
    if videos > MAX_VIDEOS:
        raise ValueError(f"{what} is more than {MAX_VIDEOS} videos in one call; split it")
    if isinstance(generator, list) and len(generator) != videos:
        raise ValueError(f"generator: a list of {len(generator)} generators for {videos} videos; pass one per video")


def check_generation_args(pipe, prompt, height, width, num_frames, num_inference_steps, guidance_scale,
                          negative_prompt, eta, generator, latents, prompt_embeds, negative_prompt_embeds,
                          output_type, callback_on_step_end, num_videos_per_prompt, noise_shared_ratio,
                          keyframes=None, keyframe_strength=1.0, keyframe_schedule=None, from_image=False, loop=False,
                          prompt_syntax="plain", truncate_long_prompts=False, callback=None, callback_steps=None,
                          callback_on_step_end_tensor_inputs=None, cross_attention_kwargs=None,
                          keyframe_resample=1) -> int:
    """Check every argument of ``pipe(...)`` (ValueError naming it); return the number of videos.
    ``keyframes``: the held frames as ``pipe.read_keyframes`` read them (None without any); ``from_image``: they
    are ``image=``'s (then the messages name ``image`` and ``image_strength``)."""
    check_component(pipe, "unet", "generating")
    check_component(pipe, "scheduler", "generating")
    if keyframes is not None:  # first: an image's size is the video's default size
        check_keyframe_anchor(pipe, keyframes, keyframe_strength, keyframe_schedule, from_image, num_frames, height,
                              width)
    check_keyframe_resample(pipe, keyframe_resample, keyframes)
    check_prompt_reading(prompt_syntax, truncate_long_prompts)
    check_loop(pipe, loop)
    check_size(height, width, num_frames, pipe.vae_scale_factor)
    check_sampling(num_inference_steps, guidance_scale, eta, noise_shared_ratio, generator, latents)
    checks.positive_int("num_videos_per_prompt", num_videos_per_prompt)
    check_output(output_type, callback_on_step_end)
    check_decoder(pipe, output_type)
    check_step_callbacks(pipe, callback_on_step_end_tensor_inputs, callback, callback_steps)
    check_cross_attention_kwargs(pipe, cross_attention_kwargs)
    batch = check_prompts(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                          pipe.unet.config.cross_attention_dim, num_frames)
    check_text_encoder(pipe, prompt, guidance_scale, negative_prompt_embeds)
    videos = batch * num_videos_per_prompt
    check_video_count(videos, generator, f"{batch} prompt(s) x num_videos_per_prompt={num_videos_per_prompt}")
    for frame, value in (keyframes or {}).items():
        if value.ndim == 4 and value.shape[0] not in (1, videos):
            raise ValueError(f"keyframes[{frame}]: latents for {value.shape[0]} videos, but this call makes {videos}")
    return videos


def check_component(pipe, name, purpose):
    """``purpose`` needs the pipeline's ``name`` (one of ``_optional_components`` may be None)."""
    if getattr(pipe, name, None) is None:
        raise ValueError(f"{purpose}: this pipeline has no {name}; give it one (from_pretrained(..., {name}=...) or "
                         f"{type(pipe).__name__}(**components))")


def check_component_names(components):
    """Components given by name (``from_pretrained(..., text_encoder=None)``, ``from_pipe(pipe, scheduler=...)``):
    only the pipeline's five; None only for the optional ones."""
    for name, part in components.items():
        if name not in COMPONENTS:
            raise ValueError(f"{name!r} is not a component of this pipeline (its components: {', '.join(COMPONENTS)})")
        if part is None and name not in OPTIONAL_COMPONENTS:
            raise ValueError(f"{name}=None: a pipeline cannot run without its {name} (only "
                             f"{', '.join(OPTIONAL_COMPONENTS)} may be None)")


def check_decoder(pipe, output_type):
    """Frames need the VAE to decode the latents; output_type="latent" needs none."""
    if output_type != "latent" and pipe.vae is None:
        raise ValueError(f"output_type={output_type!r}: this pipeline has no vae to decode the latents into frames; "
                         f"pass output_type='latent' for the latents themselves, or give the pipeline a vae")


def check_step_callbacks(pipe, tensor_inputs, callback, callback_steps):
    """diffusers' callback arguments: the names ``callback_on_step_end_tensor_inputs`` lists (each one of
    ``pipe._callback_tensor_inputs``), the legacy ``callback`` and its ``callback_steps``."""
    if tensor_inputs is not None:
        if isinstance(tensor_inputs, str) or not all(isinstance(n, str) for n in tensor_inputs):
            raise ValueError(f"callback_on_step_end_tensor_inputs must be a list of names, got {tensor_inputs!r:.80}")
        unknown = [n for n in tensor_inputs if n not in pipe._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: {unknown[0]!r} is not one of "
                             f"{list(pipe._callback_tensor_inputs)} (the tensors a step callback can see)")
    checks.callable_or_none("callback", callback)
    if callback_steps is not None:
        checks.positive_int("callback_steps", callback_steps)


def check_cross_attention_kwargs(pipe, kwargs):
    """Only {"scale": s}, a finite number: the LoRA adapters' weight for this call. A LoRA fused into the
    weights cannot be re-weighted per call (its correction is inside W)."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise ValueError(f"cross_attention_kwargs must be a dict such as {{'scale': 0.7}}, got {kwargs!r:.80}")
    for key in kwargs:
        if key != "scale":
            raise ValueError(f"cross_attention_kwargs: {key!r} is not used by this pipeline; only 'scale' (the LoRA "
                             f"adapters' weight for this call) is")
    if "scale" in kwargs:
        scale = checks.number("cross_attention_kwargs['scale']", kwargs["scale"])
        fused = [path for path, layer in lora_layers(pipe.unet).items() if layer.unfused_weight is not None]
        if fused and scale != 1.0:
            raise ValueError(f"cross_attention_kwargs['scale']={scale}: the LoRA is fused into the UNet's weights "
                             f"(fuse_lora, e.g. {fused[0]}), so it cannot be re-weighted per call; call "
                             f"pipe.unfuse_lora() first, or fuse it with fuse_lora(lora_scale={scale})")


def check_prompt_reading(prompt_syntax, truncate_long_prompts):
    checks.one_of("prompt_syntax", prompt_syntax, SYNTAXES, hint=" (plain: the text as typed; a1111: sd-webui's "
                  "(word:1.2) [word]; compel: word+ (words)1.2)")
    checks.boolean("truncate_long_prompts", truncate_long_prompts,
                   hint=" (False: long prompts in chunks of 75 tokens; True: cut to one, with a warning)")


def check_loop(pipe, loop):
    checks.boolean("loop", loop)
    if loop and pipe.free_noise is not None:
        raise ValueError("loop=True: FreeNoise's windows of frames do not wrap around, so the temporal attention "
                         "would again see where the video starts; call pipe.disable_free_noise() for a loop")


def check_text_encoder(pipe, prompt, guidance_scale, negative_prompt_embeds):
    """A pipeline without a text encoder (or tokenizer) runs from embeddings only: say which is missing."""
    needs_negative = pipe.classifier_free_guidance(guidance_scale) and negative_prompt_embeds is None
    needs_text = prompt is not None or needs_negative
    missing = [name for name in ("text_encoder", "tokenizer") if getattr(pipe, name) is None]
    if needs_text and missing:
        what = "prompt" if prompt is not None else "negative_prompt (guidance_scale > 1 needs negative_prompt_embeds)"
        raise ValueError(f"{what}: this pipeline has no {' and no '.join(missing)} to encode text; pass "
                         f"prompt_embeds (and negative_prompt_embeds for guidance), or load the pipeline with one")


# ------------------------------------------------------------------- video-to-video and image-to-video
def check_strength(strength, num_inference_steps, name="strength"):
    """SDEdit's strength: a number in (0, 1] that leaves at least one of the ``num_inference_steps`` steps
    (``num_inference_steps=None``: the range alone)."""
    checks.number(name, strength, low=0, high=1, low_open=True,
                  hint=" (the fraction of the noise schedule to run: 1 starts from pure noise)")
    if num_inference_steps is None:
        return
    checks.positive_int("num_inference_steps", num_inference_steps)
    if int(num_inference_steps * strength) < 1:
        raise ValueError(f"{name}={strength} with num_inference_steps={num_inference_steps} leaves no denoising "
                         f"step (int({num_inference_steps} x {strength}) = 0); raise {name} or "
                         f"num_inference_steps to at least {math.ceil(1 / strength)}")


def fitting_sizes(size, factor):
    """The multiples of ``factor`` nearest to ``size``: below (crop) and above (pad or resize)."""
    below = max(size // factor * factor, factor)
    return below, (size + factor - 1) // factor * factor


def check_frames_shape(name, frames, height, width, factor):
    """A video's frame count and frame size (pixels), before any model runs."""
    if frames > MAX_FRAMES:
        raise ValueError(f"{name}: {frames} frames is more than MAX_FRAMES={MAX_FRAMES}; cut the video "
                         f"(e.g. {name}[:{MAX_FRAMES}]) or use fewer frames")
    if max(height, width) > MAX_SIZE:
        raise ValueError(f"{name}: frames of {height}x{width} pixels are beyond any sensible size "
                         f"(at most {MAX_SIZE} a side); resize them")
    if height % factor or width % factor:
        (h0, h1), (w0, w1) = fitting_sizes(height, factor), fitting_sizes(width, factor)
        raise ValueError(f"{name}: frames of {height}x{width} pixels (height x width); both must be multiples "
                         f"of {factor} (the VAE's downsampling): crop to {h0}x{w0} or resize to {h1}x{w1}")


def check_video_latents(name, latents, channels):
    if not latents.is_floating_point() or latents.ndim != 5 or latents.shape[1] != channels:
        raise ValueError(f"{name}: latents must be a float tensor (videos, {channels}, frames, h, w), got "
                         f"{tuple(latents.shape)} {latents.dtype}")
    if latents.shape[0] == 0 or latents.shape[2] == 0:
        raise ValueError(f"{name}: the video is empty (latents of shape {tuple(latents.shape)})")
    if latents.shape[2] > MAX_FRAMES:
        raise ValueError(f"{name}: {latents.shape[2]} frames is more than MAX_FRAMES={MAX_FRAMES}")
    if not torch.isfinite(latents).all():
        raise ValueError(f"{name}: the latents contain NaN or infinite values")


def check_video_to_video_args(pipe, prompt, strength, num_inference_steps, guidance_scale, negative_prompt, eta,
                              generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
                              callback_on_step_end, prompt_syntax="plain", truncate_long_prompts=False, callback=None,
                              callback_steps=None, callback_on_step_end_tensor_inputs=None,
                              cross_attention_kwargs=None) -> int:
    """Check the arguments of a video-to-video call other than the video (ValueError naming each);
    return the number of prompts."""
    check_component(pipe, "unet", "video-to-video")
    check_component(pipe, "scheduler", "video-to-video")
    check_prompt_reading(prompt_syntax, truncate_long_prompts)
    if pipe.free_init is not None:
        raise ValueError("FreeInit does not combine with video-to-video: each of its passes re-noises the result "
                         "to the first timestep, from pure noise, and would discard the video; call "
                         "pipe.disable_free_init() first")
    check_strength(strength, num_inference_steps)
    check_sampling(num_inference_steps, guidance_scale, eta, 0.0, generator, latents)
    check_output(output_type, callback_on_step_end)
    check_decoder(pipe, output_type)
    check_step_callbacks(pipe, callback_on_step_end_tensor_inputs, callback, callback_steps)
    check_cross_attention_kwargs(pipe, cross_attention_kwargs)
    prompts = check_prompts(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                            pipe.unet.config.cross_attention_dim)
    check_text_encoder(pipe, prompt, guidance_scale, negative_prompt_embeds)
    return prompts


# ------------------------------------------------------------------ keyframes, continuation, in-between frames
RESERVED_BY_EXTEND = ("keyframes", "image", "image_strength", "num_frames", "loop")


def check_keyframes_form(image, keyframes):
    """Before the images are read: ``image=`` or ``keyframes=``, and keyframes a non-empty dict {frame index: image}."""
    if keyframes is None:
        return
    if image is not None:
        raise ValueError("pass image= or keyframes=, not both (image= is keyframes={0: image})")
    if not isinstance(keyframes, dict) or not keyframes:
        raise ValueError(f"keyframes must be a non-empty dict {{frame index: image}}, got {keyframes!r:.80}")
    for frame in keyframes:
        checks.integer("keyframes: a frame index", frame, hint=" (keys are frame indices, values images)")


def check_keyframe_anchor(pipe, keyframes, strength, schedule, from_image, num_frames, height, width):
    """Held frames (``read_keyframes``'s {frame: pixels (H, W, 3) or latents}): frame indices in [0, num_frames),
    each image of the video's size, latents of its latent size, strengths in [0, 1], a schedule that is None, a
    release fraction in (0, 1] or a callable; FreeInit refused."""
    what = "image" if from_image else "keyframes"
    checks.positive_int("num_frames", num_frames)
    if any(value.ndim == 3 and value.shape[-1] == 3 for value in keyframes.values()):
        check_component(pipe, "vae", f"{what}: encoding the image{'' if from_image else 's'}")
    if pipe.free_init is not None:
        raise ValueError(f"{what}: held frames and FreeInit's re-noised passes do not combine; call "
                         f"pipe.disable_free_init() to {'start from an image' if from_image else 'use keyframes'}")
    factor, channels = pipe.vae_scale_factor, pipe.unet.config.in_channels
    for frame, value in keyframes.items():
        name = "image" if from_image else f"keyframes[{frame}]"
        if not 0 <= frame < num_frames:
            raise ValueError(f"keyframes: frame {frame} is outside the video's frames [0, num_frames={num_frames})")
        if value.ndim == 3 and value.shape[-1] == 3:  # pixels (H, W, 3)
            check_keyframe_image(name, value.shape, height, width, factor)
        else:  # latents (C, h, w) or (B, C, h, w)
            check_keyframe_latents(name, value, channels, height // factor, width // factor)
    if from_image:
        checks.number("image_strength", strength, low=0, high=1, hint=" (1: the first frame is the image)")
    elif isinstance(strength, (list, tuple)):
        if len(strength) != len(keyframes):
            raise ValueError(f"keyframe_strength: {len(strength)} numbers for {len(keyframes)} keyframes; give one "
                             f"number, or one per keyframe in the order of keyframes")
        for frame, s in zip(keyframes, strength):
            checks.number(f"keyframe_strength (frame {frame})", s, low=0, high=1)
    else:
        checks.number("keyframe_strength", strength, low=0, high=1,
                      hint=" (1: the frame is the keyframe; or a list, one per keyframe)")
    if schedule is not None and not callable(schedule):
        checks.number("keyframe_schedule", schedule, low=0, high=1, low_open=True,
                      hint=" (None: full strength to the end; r: full strength over the first r of the steps, then "
                           "released; or a callable of the share of steps done)")


def check_keyframe_resample(pipe, passes, keyframes):
    """``keyframe_resample``: an integer >= 1; above 1, held frames to agree with and a sampler that can take a step
    again (``techniques.repaint.check``)."""
    passes = repaint.check(passes, pipe.scheduler, "keyframe_resample")
    if passes > 1 and keyframes is None:
        raise ValueError(f"keyframe_resample={passes}: only with keyframes= or image= (it lets the other frames agree "
                         f"with the held ones; without any it only costs {passes}x the UNet calls)")


def check_keyframe_image(name, shape, height, width, factor):
    h, w = shape[:2]
    if (h, w) != (height, width):
        which = "the image" if name == "image" else "it"
        raise ValueError(f"{name}: {h}x{w} pixels (height x width) but the video is {height}x{width}; resize {which} "
                         f"(t2vlab.video_to_video.resize_video), or pass height={h}, width={w} (or leave them out: "
                         f"they default to the first keyframe's)")
    check_frames_shape(name, 1, h, w, factor)


def check_keyframe_latents(name, value, channels, h, w):
    if not value.is_floating_point() or tuple(value.shape[-3:]) != (channels, h, w):
        raise ValueError(f"{name}: latents must be a float tensor ({channels}, {h}, {w}) or (videos, {channels}, {h}, "
                         f"{w}) for this video, got {tuple(value.shape)} {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name}: the latents contain NaN or infinite values")


def check_extend_args(video_frames, num_frames, overlap, output_type, latent, kwargs):
    """``pipe.extend``: a chunk of ``num_frames`` holding ``overlap`` of the video's last frames (None: half the
    chunk), one new frame at least; returns (num_frames, overlap)."""
    checks.positive_int("num_frames", num_frames, high=MAX_FRAMES)
    overlap = max(num_frames // 2, 1) if overlap is None else overlap
    checks.positive_int("overlap", overlap)
    if overlap >= num_frames:
        raise ValueError(f"overlap={overlap} must be smaller than the chunk (num_frames={num_frames}): a chunk holding "
                         f"{overlap} of the video's frames adds num_frames - overlap = {num_frames - overlap} new ones")
    if overlap > video_frames:
        raise ValueError(f"overlap={overlap}: the video has only {video_frames} frame(s) to continue from")
    if output_type == "latent" and not latent:
        raise ValueError("output_type='latent': the video was given as pixels, so the joined video is pixels; to "
                         "continue in latents pass the latents (output_type='latent' of the call that made the video)")
    check_reserved("extend", kwargs, RESERVED_BY_EXTEND)
    return num_frames, overlap


def check_interpolate_args(video_frames, factor, kwargs) -> int:
    """``pipe.interpolate``: an integer factor >= 2 and a video of 2 frames or more; returns the new frame count."""
    checks.integer("factor", factor, low=2, hint=" (the new video has factor x as many frames between two given)")
    if video_frames < 2:
        raise ValueError(f"video: {video_frames} frame; in-between frames need at least two")
    frames = frames_after(video_frames, factor)
    if frames > MAX_FRAMES:
        raise ValueError(f"interpolate: {video_frames} frames x factor {factor} make {frames} frames, more than "
                         f"MAX_FRAMES={MAX_FRAMES}; interpolate a shorter part")
    check_reserved("interpolate", kwargs, RESERVED_BY_EXTEND)
    return frames


def check_reserved(method, kwargs, reserved):
    taken = [k for k in reserved if k in kwargs]
    if taken:
        raise ValueError(f"{method}: {', '.join(taken)} cannot be passed here; {method} sets the held frames and "
                         f"the length of the chunk itself")


def check_callback_update(update, x):
    """The latents a ``callback_on_step_end`` returned (or ``x`` if it returned none)."""
    if not (isinstance(update, dict) and "latents" in update):
        return x
    new = update["latents"]
    if not torch.is_tensor(new) or new.shape != x.shape:
        raise ValueError(f"callback_on_step_end returned latents of shape {getattr(new, 'shape', None)}; "
                         f"expected {tuple(x.shape)}")
    return new


def check_callback_embeds(name, new, like, batch=None):
    """Text embeddings a ``callback_on_step_end`` returned: a float tensor shaped like ``like`` (what it was given),
    with ``batch`` rows when given (the context under guidance has two per video: [uncond; cond])."""
    if like is None:
        raise ValueError(f"callback_on_step_end returned {name}, but this call has none to replace (no guidance: "
                         f"guidance_scale <= 1)")
    want = (like.shape[0] if batch is None else batch, *like.shape[1:])
    if not torch.is_tensor(new) or not new.is_floating_point() or tuple(new.shape) != want:
        hint = ""
        if batch is not None and torch.is_tensor(new) and new.shape[0] * 2 == batch:
            hint = (" (with guidance the context is [uncond; cond]; to stop guidance from this step on, also set "
                    "pipe._guidance_scale = 0.0, as in diffusers' dynamic classifier-free guidance)")
        raise ValueError(f"callback_on_step_end returned {name} of shape {tuple(getattr(new, 'shape', ()))}; expected "
                         f"a float tensor of shape {want}{hint}")
    return new


def check_latents_or_pixels(name, video, channels):
    """A tensor (V, 4, 3, H, W) reads two ways: latents of 3 frames (V, 4, F, h, w), or 4 frames of RGB pixels
    channels first (V, F, 3, H, W), diffusers' layout. Pixels lie in [0, 1] and latents almost never do, so a value
    outside [0, 1] says latents; with every value inside, the shape is refused as ambiguous."""
    if not (torch.is_tensor(video) and video.ndim == 5 and video.shape[1] == channels and video.shape[2] == 3
            and video.shape[-1] != 3):
        return
    if not ((video < 0) | (video > 1)).any():
        raise ValueError(f"{name}: a tensor of shape {tuple(video.shape)} with every value in [0, 1] reads two ways: "
                         f"latents (videos, {channels} channels, 3 frames, h, w) or RGB pixels channels first (videos, "
                         f"{channels} frames, 3 colours, H, W); pass pixels channels last (permute(0, 1, 3, 4, 2))")


# ------------------------------------------------------------------------------------ out of memory
def is_out_of_memory(error) -> bool:
    """torch's CUDA OOM, or the CPU allocator's "can't allocate memory" RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("allocate" in text and ("memory" in text or "bytes" in text))


@contextlib.contextmanager
def explain_out_of_memory(pipe, videos, frames, height, width, steps):
    """Re-raise running out of memory as OutOfMemoryError: what was asked, which options are on, what helps."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not (isinstance(e, MemoryError) or is_out_of_memory(e)) or isinstance(e, OutOfMemoryError):
            raise
        on_off = {"enable_model_cpu_offload()": bool(pipe.offload_device),
                  "enable_vae_slicing()": pipe.vae is not None and pipe.vae.use_slicing,
                  "enable_vae_tiling()": pipe.vae is not None and pipe.vae.use_tiling,
                  "enable_attention_slicing()": any(m.backend == "sliced" for m in pipe.unet.attention_modules())}
        state = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in on_off.items())
        helps = [k for k, v in on_off.items() if not v]
        raise OutOfMemoryError(
            f"out of memory on {pipe.device} while generating {videos} video(s) x {frames} frames x "
            f"{height}x{width} pixels ({steps} steps, {pipe.dtype}). Options now: {state}. What would help: "
            f"{', '.join(helps) + '; ' if helps else ''}fewer frames (num_frames={frames}), a smaller "
            f"height/width, fewer videos per call (now {videos}), or torch_dtype=torch.float16 on a GPU. "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


# -------------------------------------------------------------------------------------- finiteness
def _overflow_advice(guidance_scale):
    return (f"In float16 this is usually an overflow: load with torch_dtype=torch.float32, or lower "
            f"guidance_scale (now {guidance_scale}).")


def check_finite(flags, guidance_scale, total_steps):
    """Raise at the first step whose latents were not finite; ``flags`` is [(i, t, finite tensor)],
    emptied once read."""
    ok = torch.stack([f for _, _, f in flags]).cpu()
    bad = [(i, t) for (i, t, _), good in zip(flags, ok) if not good]
    flags.clear()
    if bad:
        i, t = bad[0]
        raise FloatingPointError(f"the latents became NaN/inf at step {i + 1} of {total_steps} (t={int(t)}). "
                                 + _overflow_advice(guidance_scale))


class FiniteWatch:
    """A step hook of the denoising loop that stops at the first step whose latents are NaN/inf.

    The flags stay on the device until read: on a GPU a read makes the CPU wait for the GPU, so they
    are read every ``CHECK_EVERY`` steps there (and at the last step, and before a callback sees the
    latents: ``every=1``); on the CPU a read is free, so after every step.
    """

    def __init__(self, total_steps, guidance_scale, every=None):
        self.total, self.guidance_scale, self.every, self.flags = total_steps, guidance_scale, every, []

    def __call__(self, i, t, x, x0):
        self.flags.append((i, t, torch.isfinite(x).all()))
        every = self.every or (1 if x.device.type == "cpu" else CHECK_EVERY)
        if len(self.flags) >= every or i == self.total - 1:
            check_finite(self.flags, self.guidance_scale, self.total)
        return x


def check_decoded(frames, latents, guidance_scale):
    """Non-finite frames from finite latents: the VAE overflowed (float16)."""
    if not torch.isfinite(frames).all():
        raise FloatingPointError(
            f"the VAE decoded NaN/inf frames from finite latents (max |latents| {latents.abs().max().item():.3g}). "
            f"In float16 the VAE overflows: load with torch_dtype=torch.float32, or lower guidance_scale "
            f"(now {guidance_scale}).")
