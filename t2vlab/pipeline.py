"""TextToVideoPipeline: prompt in, video out, with our own modules throughout.

The interface follows diffusers' TextToVideoSDPipeline (same argument names and defaults), so the
seed page's examples run unchanged but for the import. Where the weights come from is
``t2vlab.weights``; the argument rules and error messages around a generation are ``t2vlab.guards``.

The method is ``__call__``'s numbered steps; ``denoise`` is the loop every other pipeline of the
package (video-to-video, long videos, fine-tuning previews) reuses. The techniques of
``t2vlab.techniques`` plug in where ``__call__`` says: prompt travel and weighted prompts at step 1,
FreeNoise's noise and the keyframes (``keyframes=``, ``image=``) at step 2, FreeInit and loops at step 3;
``extend`` (continuation) and ``interpolate`` (in-between frames) are calls of ``__call__`` with keyframes.
Their switches are mixed in
(``t2vlab.technique_switches``), as are the memory switches (``t2vlab.memory_switches``), the compiled path
(``t2vlab.compiled``) and the LoRA methods (``t2vlab.lora_loading``). Every attribute the pipeline has is
declared in ``__init__``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .callbacks import Conditioning, StepCallbacks, as_conditioning
from .compiled import CompiledPath
from .frames import batch_to_frames, frames_to_batch
from .guards import (  # noqa: F401  (OutOfMemoryError: documented as t2vlab.pipeline.OutOfMemoryError)
    FiniteWatch,
    OutOfMemoryError,
    check_component_names,
    check_decoded,
    check_extend_args,
    check_generation_args,
    check_interpolate_args,
    check_keyframes_form,
    check_video_latents,
    explain_out_of_memory,
)
from .inputs import image_input, video_input
from .lora_loading import LoraLoaderMixin
from .memory_switches import MemorySwitches
from .noise import video_noise
from .outputs import Output
from .saving import save_pipeline
from .technique_switches import TechniqueSwitches
from .techniques import continuation, interpolation, prompt_travel
from .techniques.consistency import guidance_scale_embedding
from .techniques.keyframes import anchor_keyframes, is_latent_frame, per_keyframe, stack_keyframe_latents
from .techniques.loops import looping
from .techniques.prompt_weighting import empty_prompt_embeds, encode_prompts, pad_chunks
from .techniques.repaint import Resampling
from .weights import OPTIONAL_COMPONENTS, adapter_settings, load_components, recommended_settings, resolve_checkpoint


@dataclass
class TextToVideoOutput(Output):
    """``frames``: one video per prompt (x num_videos_per_prompt), each (F, H, W, 3).
    np: float32 array (B, F, H, W, 3) in [0, 1]; pt: the same as a tensor; pil: a list (per video)
    of lists of PIL images; latent: the final latents (B, 4, F, h, w). ``out[0]`` and ``out["frames"]`` are
    ``out.frames`` too (``t2vlab.outputs``).
    """

    frames: object


class TextToVideoPipeline(TechniqueSwitches, MemorySwitches, CompiledPath, LoraLoaderMixin):
    """Text to video. Mixed in: the ``enable_*``/``disable_*`` switches of the techniques (FreeU, FreeInit,
    FreeNoise, DeepCache: ``t2vlab.technique_switches``) and of memory (offload, VAE slicing and tiling,
    attention slicing: ``t2vlab.memory_switches``), ``compile`` (``t2vlab.compiled``), the LoRA methods
    (``t2vlab.lora_loading``). The mixins keep no state of their own: all of it is here.

    Components are passed by name, as diffusers' are (``TextToVideoPipeline(**pipe.components)``); the optional
    ones may be None where a call does not need them (a call that does names the missing one)."""

    _optional_components = OPTIONAL_COMPONENTS  # text_encoder, tokenizer (prompt_embeds), vae (output_type="latent")
    _callback_tensor_inputs = ("latents", "prompt_embeds", "negative_prompt_embeds", "pred_original_sample")
    reference_class = "TextToVideoSDPipeline"  # diffusers' class of the same pipeline: model_index.json's _class_name

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, name_or_path=""):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder  # the models
        self.tokenizer, self.scheduler = tokenizer, scheduler  # text -> ids; the sampler
        self.name_or_path = str(name_or_path)  # where it was loaded from: decides ``recommended``
        self.offload_device = None  # with enable_model_cpu_offload: the device each model visits while it runs
        self.progress_bar_config = {}  # options for tqdm (set_progress_bar_config)
        self.free_init = None  # FreeInit's settings while enable_free_init is on (techniques.free_init)
        self.free_noise = None  # FreeNoise's settings while enable_free_noise is on (techniques.free_noise)
        self.prompt_interpolation_callback = None  # prompt travel's rule between keyframes; None: linear
        self.compiled = None  # {"mode", "backend", "vae"} while compiled (t2vlab.compiled)
        self.first_call_seconds = None  # the last warm_up's timings, {"unet": s, "vae": s}
        self.num_timesteps = None  # the steps of the running (or last) denoising loop, as diffusers' num_timesteps
        self._guidance_scale = None  # the running loop's guidance scale; a step callback may set it (callbacks.py)
        self.lora_sources = {}  # adapter name -> where load_lora_weights read it: (Hub id, file or folder) or a path

    @classmethod
    def from_pretrained(cls, repo_id_or_path="toy", torch_dtype=None, variant=None, device=None,
                        local_files_only=False, **components):
        """Load all five components (see ``t2vlab.weights``): a folder, a Hub id, "toy" or "tiny".

        ``torch_dtype``: one dtype, or one per model with a default: ``{"unet": torch.float16, "default":
        torch.float32}``. ``components``: ones you bring instead of loading them, by name (``text_encoder=None``
        for a pipeline run from ``prompt_embeds``; ``scheduler=...``), as diffusers takes them."""
        check_component_names(components)
        folder = resolve_checkpoint(repo_id_or_path, variant, local_files_only)
        loaded = load_components(folder, torch_dtype, variant, skip=set(components))
        pipe = cls(**loaded, **components, name_or_path=repo_id_or_path)
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def from_pipe(cls, pipe, **components):
        """This kind of pipeline on another pipeline's models, shared (not copied: no second load, no more
        memory), with its offload and progress-bar settings: ``VideoToVideoPipeline.from_pipe(pipe)``;
        ``components`` replace some by name (``scheduler=...``)."""
        check_component_names(components)
        new = cls(**{**pipe.components, **components}, name_or_path=pipe.name_or_path)
        new.offload_device, new.progress_bar_config = pipe.offload_device, dict(pipe.progress_bar_config)
        new.lora_sources = pipe.lora_sources  # the same UNet, so the same adapters: one record of them
        return new

    @property
    def components(self) -> dict:
        """The five components by diffusers' names (None where absent): ``OtherPipeline(**pipe.components)``."""
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                "scheduler": self.scheduler}

    def save_pretrained(self, save_directory, safe_serialization=True, variant=None):
        """The whole pipeline as one folder in the published layout (model_index.json and a folder per component),
        loadable by t2vlab and by diffusers: see ``t2vlab.saving`` (a fused LoRA is saved inside the weights)."""
        return save_pipeline(self.components, save_directory, self.reference_class, variant, safe_serialization)

    @property
    def recommended(self):
        """The size, frames, steps, sampler and a sample prompt this checkpoint is meant for; with a known distilled
        adapter loaded and active (MCM, T2V-Turbo: ``weights.KNOWN_ADAPTERS``), its sampler, steps and guidance."""
        checkpoint = recommended_settings(self.name_or_path, self.unet.config, self.vae_scale_factor)
        return adapter_settings(checkpoint, self.active_lora_sources())

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along a side: the VAE's downsampling (8 without a VAE, as diffusers assumes)."""
        return self.vae.spatial_factor if self.vae is not None else 8

    @property
    def guidance_scale(self):
        """The running (or last) denoising loop's guidance scale (``pipe._guidance_scale``, as diffusers')."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale is not None and self.classifier_free_guidance(self._guidance_scale)

    # ---------------------------------------------------------------------------- placement
    @property
    def models(self):
        """The pipeline's networks that are present (a component may be None: a pipeline run from
        ``prompt_embeds`` needs no text encoder)."""
        models = {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae}
        return {name: model for name, model in models.items() if model is not None}

    @property
    def device(self):
        """Where the work runs: the offload device when offloading, else the UNet's device."""
        return torch.device(self.offload_device) if self.offload_device else self.unet.device

    @property
    def dtype(self):
        return self.unet.dtype

    def to(self, device=None, dtype=None):
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but PyTorch sees no CUDA GPU here")
        for model in self.models.values():
            model.to(device=device, dtype=dtype)
        self.offload_device = None if device is not None else self.offload_device  # moved: offload ends
        return self

    @contextlib.contextmanager
    def running(self, model):
        """``model`` on the execution device for the duration (with offload: moved there, then back)."""
        if not self.offload_device or model is None:
            yield model
            return
        model.to(self.offload_device)
        try:
            yield model
        finally:
            model.to("cpu")

    def set_progress_bar_config(self, **kwargs):
        """Options for the tqdm bar, e.g. ``disable=True``."""
        self.progress_bar_config = dict(kwargs)

    def progress_bar(self, total, desc="denoising"):
        return tqdm(total=total, **{"desc": desc, **self.progress_bar_config})

    # ---------------------------------------------------------------------------- the steps
    def encode_prompt(self, prompt, device, num_videos_per_prompt=1, do_classifier_free_guidance=True,
                      negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None, clip_skip=None,
                      prompt_syntax="plain", truncate_long_prompts=False):
        """(cond, uncond) text embeddings, each (B * num_videos_per_prompt, 77 * n, D); uncond is None
        without guidance. Given embeddings are used as they are (then no text encoder is needed).

        ``prompt_syntax``: "plain" (the text as typed), "a1111" or "compel" (weighted prompts, each syntax with its
        rule: ``techniques.prompt_weighting``). A prompt longer than the encoder's 77 positions is encoded in
        n chunks of 75 tokens (the shorter of prompt and negative padded with the empty prompt's chunks); with
        ``truncate_long_prompts=True`` it is cut to one chunk instead, with a warning naming what was cut."""
        with self.running(self.text_encoder) as encoder, torch.no_grad():
            def embed(texts):
                return encode_prompts(self.tokenizer, encoder, texts, prompt_syntax=prompt_syntax, clip_skip=clip_skip,
                                      truncate=truncate_long_prompts)[0]

            if prompt_embeds is None:
                prompt_embeds = embed(prompt)
            if do_classifier_free_guidance and negative_prompt_embeds is None:
                negative = "" if negative_prompt is None else negative_prompt
                if isinstance(negative, str):
                    negative = [negative] * len(prompt_embeds)
                negative_prompt_embeds = embed(negative)
                if negative_prompt_embeds.shape[1] != prompt_embeds.shape[1]:  # long prompts: as many chunks
                    empty = empty_prompt_embeds(self.tokenizer, encoder, clip_skip)
                    prompt_embeds, negative_prompt_embeds = pad_chunks([prompt_embeds, negative_prompt_embeds], empty)
        dtype = (self.text_encoder or self.unet).dtype  # as diffusers: the encoder's dtype, else the UNet's

        def per_video(e):
            return e.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, 0)

        return per_video(prompt_embeds), per_video(negative_prompt_embeds) if do_classifier_free_guidance else None

    def prepare_latents(self, batch, frames, height, width, dtype, device, generator, latents=None,
                        noise_shared_ratio=0.0):
        """Starting noise (B, C, F, H/8, W/8) times ``init_noise_sigma``; with ``noise_shared_ratio`` > 0
        VideoFusion's shared + residual noise (``t2vlab.noise.video_noise``)."""
        f = self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, frames, height // f, width // f)
        if latents is None:
            latents = video_noise(shape, generator, device, dtype, noise_shared_ratio)
            if self.free_noise is not None:  # FreeNoise: later frames reuse the first window's noise
                latents = self.free_noise.reschedule(latents, generator)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {shape} for these arguments, got {tuple(latents.shape)}")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    @property
    def guidance_embedded(self) -> bool:
        """Whether the UNet takes the guidance scale as an input (``time_cond_proj_dim``: consistency-distilled)."""
        return self.unet.config.time_cond_proj_dim is not None

    def classifier_free_guidance(self, guidance_scale) -> bool:
        """Whether guidance runs as two UNet passes: for ``guidance_scale`` > 1, unless the UNet embeds the guidance
        scale (``guidance_embedded``: a consistency-distilled UNet takes w as an input and runs once per step)."""
        return guidance_scale > 1.0 and not self.guidance_embedded

    def guidance_condition(self, guidance_scale, batch):
        """The UNet's ``timestep_cond``: for a UNet that embeds the guidance scale, w = ``guidance_scale`` as LCM's
        sin/cos embedding (batch, time_cond_proj_dim) (``techniques.consistency``); None for any other UNet.
        w is ``guidance_scale`` itself, as T2V-Turbo's pipeline passes it (diffusers' LatentConsistencyModelPipeline
        passes ``guidance_scale - 1``: for a UNet distilled that way, ask for one more)."""
        dim = self.unet.config.time_cond_proj_dim
        return None if dim is None else guidance_scale_embedding(torch.full((batch,), float(guidance_scale)), dim)

    def predict_noise(self, unet, x, t, context, guidance_scale):
        """The UNet's noise estimate at t, with classifier-free guidance when ``guidance_scale`` > 1:
        one call on [x, x] with [uncond, cond], then eps = eps_u + g * (eps_c - eps_u). A UNet that embeds the
        guidance scale instead gets it as ``timestep_cond`` and runs once (``guidance_condition``)."""
        guided = self.classifier_free_guidance(guidance_scale)
        x_in = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        with torch.no_grad():  # in the UNet's dtype, which may differ from the text's (torch_dtype as a dict)
            eps = unet(x_in.to(unet.dtype), t, context.to(unet.dtype),
                       timestep_cond=self.guidance_condition(guidance_scale, len(x_in))).to(x.dtype)
        if not guided:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    def step(self, eps, t, x, **kwargs):
        """One scheduler step on the video, frames folded into the batch as the reference does it
        (this order decides how the noise of stochastic samplers is laid out). Returns (x_prev, x0)."""
        f = x.shape[2]
        out = self.scheduler.step(frames_to_batch(eps), t, frames_to_batch(x), **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        return batch_to_frames(out.prev_sample, f), None if x0 is None else batch_to_frames(x0, f)

    def denoise(self, latents, context, timesteps=None, guidance_scale=9.0, eta=0.0, generator=None,
                callback_on_step_end=None, hooks=None, desc="denoising", resample=1):
        """The reverse process, x_T -> x_0: for each t, predict the noise (guided) and take one step.

        ``context``: the text embeddings, [uncond; cond] stacked when ``guidance_scale`` > 1; or a
        ``callbacks.Conditioning`` (context and guidance scale) that a step hook may change between steps.
        ``timesteps``: default the scheduler's (``set_timesteps`` first); a tail of them starts part-way.
        ``hooks``: callables ``hook(i, t, x, x0) -> x`` run after every step; by default the finiteness
        guard and ``callback_on_step_end`` (``step_hooks``). ``desc``: the progress bar's label.
        ``resample``: U > 1 takes each step but the last U times, noised back between (RePaint's resampling,
        ``techniques.repaint``; DDIM or DDPM only): the hooks run after every pass, with the same i.
        """
        timesteps = self.scheduler.timesteps if timesteps is None else timesteps
        text = as_conditioning(context, guidance_scale, self.guidance_embedded)  # read at every step: a callback may
        # change it
        if hooks is None:
            hooks = self.step_hooks(len(timesteps), text.guidance_scale, callback_on_step_end, text)
        self.num_timesteps, self._guidance_scale = len(timesteps), text.guidance_scale
        x, resampling = latents, Resampling(resample, self.scheduler, timesteps, generator)
        with self.running(self.unet) as unet, self.progress_bar(resampling.unet_calls, desc) as bar:
            for i, t in enumerate(timesteps):
                for again in range(resampling.passes(i)):  # once, unless resampling
                    if again:  # RePaint: back to t's noise level, and the step once more
                        x = resampling.back(x, i)
                    eps = self.predict_noise(unet, x, t, text.context, text.guidance_scale)
                    x, x0 = self.step(eps, t, x, eta=eta, generator=generator)
                    for hook in hooks:
                        x = hook(i, t, x, x0)
                    bar.update()
        return x

    def step_hooks(self, total_steps, guidance_scale, callback_on_step_end=None, conditioning=None):
        """The default hooks of ``denoise``: stop at NaN/inf latents, then the user's callbacks (which see
        finite latents only, so the guard reads its flags at every step when there are any).
        ``callback_on_step_end``: a callable, or the call's ``callbacks.StepCallbacks``; ``conditioning``: the
        loop's ``Conditioning``, whose context and guidance the callback sees and may change."""
        callbacks = StepCallbacks.of(callback_on_step_end)
        watch = FiniteWatch(total_steps, guidance_scale, every=1 if callbacks else None)
        return [watch, callbacks.hook(self, conditioning)] if callbacks else [watch]

    def encode_video(self, frames, generator=None, sample=True):
        """frames (B, F, H, W, 3) in [0, 1] (on any device) -> latents (B, C, F, H/8, W/8) scaled as the loop's,
        on the execution device; a sample of the VAE's posterior drawn with ``generator``, or its mean."""
        with self.running(self.vae) as vae, torch.no_grad():
            return vae.encode_video(frames, generator, sample).to(self.device)

    def decode_latents(self, latents):
        """latents (B, C, F, h, w) -> frames (B, F, H, W, 3) float32 in [0, 1]."""
        with self.running(self.vae) as vae, torch.no_grad():
            return vae.decode_video(latents.to(vae.device))

    def postprocess(self, frames, output_type):
        """Frames (B, F, H, W, 3) in [0, 1] as ``output_type`` asks: numpy, tensor or PIL images."""
        if output_type == "pt":
            return frames
        if output_type == "np":
            return frames.cpu().numpy()
        from PIL import Image  # imported here: only output_type="pil" needs it

        return [[Image.fromarray(im) for im in (v * 255).round().to(torch.uint8).cpu().numpy()] for v in frames]

    # ---------------------------------------------------------------------------- generation
    def __call__(self, prompt=None, height=None, width=None, num_frames=16, num_inference_steps=50,
                 guidance_scale=9.0, negative_prompt=None, eta=0.0, generator=None, latents=None,
                 prompt_embeds=None, negative_prompt_embeds=None, output_type="np", return_dict=True,
                 callback_on_step_end=None, clip_skip=None, num_videos_per_prompt=1, noise_shared_ratio=0.0,
                 image=None, image_strength=1.0, keyframes=None, keyframe_strength=1.0, keyframe_schedule=None,
                 keyframe_resample=1, loop=False, prompt_syntax="plain", truncate_long_prompts=False,
                 callback=None, callback_steps=None, cross_attention_kwargs=None,
                 callback_on_step_end_tensor_inputs=None):
        """Generate videos. Returns ``TextToVideoOutput`` (``.frames``), or a tuple without ``return_dict``.

        ``prompt`` may be a dict {frame: text}: the text changes over the video (prompt travel); ``prompt_syntax``
        "a1111" or "compel" reads weights in it (``encode_prompt``). ``keyframes`` {frame: image} holds those
        frames to the images (PIL images, arrays or tensors (H, W, 3), paths; or latents (4, h, w)) with weight
        ``keyframe_strength`` (a number, or one per keyframe), released over the steps by ``keyframe_schedule``
        (``techniques.keyframes``; height, width: the keyframes'); ``keyframe_resample=U`` > 1 takes each step
        but the last U times, noised back between, so the other frames agree better with the held ones (RePaint,
        ``techniques.repaint``; DDIM or DDPM; (N - 1) U + 1 UNet passes for N steps). ``image`` is the one-keyframe
        case {0: image} at ``image_strength``. ``loop=True``: the time axis is a circle, the last frame flows into
        the first (``techniques.loops``). ``callback_on_step_end`` (with ``callback_on_step_end_tensor_inputs``), the
        legacy ``callback`` / ``callback_steps`` and ``cross_attention_kwargs={"scale": s}`` (the LoRA's weight for
        this call only) are diffusers' (``t2vlab.callbacks``).

        0. read the keyframes, check every argument (``guards.check_generation_args``), before any work;
        1. encode the prompt and, for classifier-free guidance, the negative prompt -> context (none for a UNet
           that embeds the guidance scale: it runs once per step, w as its ``timestep_cond``) (with a
           dict {frame: text}, one text per frame: ``techniques.prompt_travel``);
        2. choose the timesteps, draw the starting noise (B, 4, F, H/8, W/8) (rescheduled with FreeNoise);
           with keyframes, hold their frames (a step hook);
        3. denoise: for each t, eps = guided UNet(x, t, context); x = scheduler step (``denoise``; with
           FreeInit, several passes of it; with ``loop``, on a circular time axis);
        4. decode the latents through the VAE -> frames (B, F, H, W, 3) in [0, 1].
        """
        held, strength = self.read_keyframes(image, image_strength, keyframes, keyframe_strength)  # {frame: image}
        height, width = self.default_size(height, width, held)
        videos = check_generation_args(
            self, prompt, height, width, num_frames, num_inference_steps, guidance_scale, negative_prompt, eta,
            generator, latents, prompt_embeds, negative_prompt_embeds, output_type, callback_on_step_end,
            num_videos_per_prompt, noise_shared_ratio, held, strength, keyframe_schedule, image is not None, loop,
            prompt_syntax, truncate_long_prompts, callback=callback, callback_steps=callback_steps,
            keyframe_resample=keyframe_resample,
            cross_attention_kwargs=cross_attention_kwargs,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        callbacks = StepCallbacks(callback_on_step_end, callback_on_step_end_tensor_inputs, callback, callback_steps)
        with explain_out_of_memory(self, videos, num_frames, height, width, num_inference_steps), \
                self.scaled_lora(cross_attention_kwargs), looping(self.unet, loop):
            device, guided = self.device, self.classifier_free_guidance(guidance_scale)
            if prompt_travel.is_travel(prompt, negative_prompt):  # a text per frame: (B, F, 77, D)
                cond, uncond = prompt_travel.encode_prompt_travel(
                    self, prompt, negative_prompt, num_frames, device, num_videos_per_prompt, guided, clip_skip,
                    self.prompt_interpolation_callback, prompt_syntax, truncate_long_prompts)
            else:  # one text per video: (B, 77, D)
                cond, uncond = self.encode_prompt(prompt, device, num_videos_per_prompt, guided, negative_prompt,
                                                  prompt_embeds, negative_prompt_embeds, clip_skip, prompt_syntax,
                                                  truncate_long_prompts)
            context = Conditioning(torch.cat([uncond, cond]) if guided else cond, guidance_scale,
                                   self.guidance_embedded)  # read at each step

            self.scheduler.set_timesteps(num_inference_steps, device=device)
            x = self.prepare_latents(videos, num_frames, height, width, context.dtype, device, generator, latents,
                                     noise_shared_ratio)
            hooks = self.step_hooks(len(self.scheduler.timesteps), guidance_scale, callbacks, context)
            if held is not None:  # keyframes: the held frames follow their latents, noised to each step's level
                anchor = self.keyframe_anchor(held, x, strength, keyframe_schedule)
                x, hooks = anchor.start(x), [anchor, *hooks]

            if self.free_init is None:
                x = self.denoise(x, context, self.scheduler.timesteps, guidance_scale, eta, generator, hooks=hooks,
                                 resample=keyframe_resample)
            else:  # FreeInit: several passes of denoise, each from the last one's low frequencies
                x = self.free_init.sample(self, x, context, num_inference_steps, guidance_scale, eta, generator,
                                          callbacks)

            video = self.finish(x, output_type, guidance_scale)
        return TextToVideoOutput(frames=video) if return_dict else (video,)

    def default_size(self, height, width, keyframes=None):
        """(height, width) of the video: as given, else the first keyframe's (``keyframes`` as ``read_keyframes``
        gives them), else the size the model was trained at (the UNet's ``sample_size`` x the VAE's factor)."""
        f = self.vae_scale_factor
        trained = self.unet.config.sample_size * f
        first = next(iter(keyframes.values())) if keyframes else None
        if first is None:
            size = (trained, trained)
        elif is_latent_frame(first, self.unet.config.in_channels):
            size = (first.shape[-2] * f, first.shape[-1] * f)
        else:
            size = tuple(first.shape[:2])
        return size[0] if height is None else height, size[1] if width is None else width

    def read_keyframes(self, image=None, image_strength=1.0, keyframes=None, keyframe_strength=1.0):
        """Step 0's reading of the held frames: ({frame: pixels (H, W, 3) in [0, 1], or latents (C, h, w) or
        (B, C, h, w) as given}, their strength), or (None, strength) without any. ``image`` is {0: image} at
        ``image_strength``. Each image is read (and refused by name) by ``inputs.image_input``."""
        check_keyframes_form(image, keyframes)
        if image is not None:
            return {0: torch.from_numpy(image_input(image))}, image_strength
        if keyframes is None:
            return None, keyframe_strength
        channels = self.unet.config.in_channels  # the latents' channels (the VAE's latent_channels)
        return {int(f): v if is_latent_frame(v, channels) else torch.from_numpy(image_input(v, f"keyframes[{f}]"))
                for f, v in keyframes.items()}, keyframe_strength

    def keyframe_anchor(self, keyframes, start_latents, strength=1.0, schedule=None):
        """The step hook that holds frames to ``keyframes`` ({frame: pixels or latents}, as ``read_keyframes``
        gives them): the images' latents (the VAE's mean, all images in one call) noised to each step's level with
        each held frame's own starting noise. ``strength``: one number or one per keyframe."""
        channels = self.vae.config.latent_channels
        images = [f for f, v in keyframes.items() if not is_latent_frame(v, channels)]
        encoded = {}
        if images:
            z = self.encode_video(torch.stack([keyframes[f] for f in images])[None], sample=False)  # (1, C, K, h, w)
            encoded = {f: z[:, :, k] for k, f in enumerate(images)}
        latents = [encoded[f] if f in encoded else keyframes[f].reshape(-1, *keyframes[f].shape[-3:]).to(self.device)
                   for f in keyframes]
        stacked = stack_keyframe_latents(latents).to(start_latents.dtype)  # (1 or B, C, K, h, w)
        return anchor_keyframes(stacked, list(keyframes), start_latents, self.scheduler.init_noise_sigma,
                                self.scheduler, self.scheduler.timesteps, per_keyframe(strength, len(keyframes)),
                                schedule)

    def finish(self, x, output_type="np", guidance_scale=None):
        """Step 4: the denoised latents as ``output_type`` ("latent": as they are), decoded frames checked finite."""
        if output_type == "latent":
            return x
        frames = self.decode_latents(x)
        check_decoded(frames, x, guidance_scale)
        return self.postprocess(frames, output_type)

    # ------------------------------------------------------------------ directing: continuation, in-between frames
    def extend(self, video, prompt=None, num_frames=None, overlap=None, output_type="np", return_dict=True, **kwargs):
        """Continue ``video`` with one more chunk (``techniques.continuation``): ``num_frames`` frames (default: the
        checkpoint's clip length, ``recommended.num_frames``) whose first ``overlap`` (default: half the chunk) are
        held to the video's last ones; returns the video joined with the chunk's new frames, ``.frames`` of
        F + num_frames - overlap frames. ``video``: pixels (any form video-to-video takes; kept as they are) or
        latents (V, 4, F, h, w), held directly (then ``output_type="latent"`` continues in latents). Other
        keyword arguments go to ``__call__`` (steps, guidance, generator, ``keyframe_strength`` ...)."""
        source, latent = self.read_video(video)
        num_frames = self.recommended.num_frames if num_frames is None else num_frames
        num_frames, overlap = check_extend_args(source.shape[2 if latent else 1], num_frames, overlap, output_type,
                                                latent, kwargs)
        tail = source[:, :, -overlap:] if latent else self.encode_video(source[:, -overlap:], sample=False)
        chunk = TextToVideoPipeline.__call__(self, continuation.per_video(prompt, len(source)), num_frames=num_frames,
                                             keyframes=continuation.overlap_keyframes(tail),
                                             output_type="latent" if latent else "pt", **kwargs).frames
        joined = continuation.join(source, chunk, overlap, latent)
        out = self.finish(joined, output_type) if latent else self.postprocess(joined, output_type)
        return TextToVideoOutput(frames=out) if return_dict else (out,)

    def interpolate(self, video, prompt="", factor=2, **kwargs):
        """In-between frames (``techniques.interpolation``): frame j of ``video`` (pixels or latents, as ``extend``
        takes them) held as frame j * factor of a video of (F - 1) * factor + 1 frames, the model drawing the rest.
        ``prompt``: what the video shows (default "": the held frames alone decide). Other keyword arguments go to
        ``__call__``; returns what it returns."""
        source, latent = self.read_video(video)
        frames = check_interpolate_args(source.shape[2 if latent else 1], factor, kwargs)
        z = source.to(self.device) if latent else self.encode_video(source, sample=False)
        return TextToVideoPipeline.__call__(self, continuation.per_video(prompt, len(z)), num_frames=frames,
                                            keyframes=interpolation.keyframes_every(z, factor), **kwargs)

    def read_video(self, video, name="video"):
        """A video to continue or interpolate: latents (V, C, F, h, w) as given (checked), or pixels
        (V, F, H, W, 3) in [0, 1] on the CPU (read by ``inputs.video_input``); and whether it is latents."""
        channels = self.unet.config.in_channels  # the latents' channels (the VAE's latent_channels)
        if continuation.is_latent_video(video, channels):
            check_video_latents(name, video, channels)
            return video, True
        return torch.from_numpy(video_input(video, name)), False

    def __repr__(self):
        parts = [f"  {k}: {type(v).__name__} ({v.num_parameters():,} parameters, {v.dtype}, {v.device})"
                 for k, v in self.models.items()]
        return "\n".join([f"{type(self).__name__}({self.name_or_path})", *parts,
                          f"  scheduler: {type(self.scheduler).__name__}"])
