"""TextToVideoPipeline: prompt in, video out, with our own modules throughout.

One generation, as ``__call__`` runs it:

1. encode the prompt (and the negative prompt, for classifier-free guidance) -> (B, 77, 1024);
2. draw the starting noise (B, 4, F, H/8, W/8), scaled by the scheduler's ``init_noise_sigma``;
3. for each timestep t: eps = unet([x, x], t, [uncond, cond]); eps = eps_u + g * (eps_c - eps_u);
   x = scheduler.step(eps, t, x);
4. decode the latents frame by frame through the VAE -> frames (B, F, H, W, 3) in [0, 1].

The interface follows diffusers' TextToVideoSDPipeline (same argument names and defaults), so the
seed page's examples run unchanged but for the import.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, read_json
from .schedulers.base import draw_noise

REAL_CHECKPOINT = "damo-vilab/text-to-video-ms-1.7b"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
EXPECTED_CLASSES = {"_class_name": ("TextToVideoSDPipeline",), "unet": ("UNet3DConditionModel",),
                    "vae": ("AutoencoderKL",), "text_encoder": ("CLIPTextModel",)}
OUTPUT_TYPES = ("np", "pt", "pil", "latent")
EMBEDDED_CHECKPOINTS = ("toy", "tiny")  # shipped in the package, one set of weights each (no fp16 variant)
CHECK_EVERY = 8  # denoising steps between two reads of the latents' finiteness flags on a GPU
MAX_FRAMES = 1024  # the model was trained on 16 frames; more than this is a typo, not a video
MAX_VIDEOS = 256  # videos in one call (prompts x num_videos_per_prompt)


class OutOfMemoryError(RuntimeError):
    """A generation ran out of (GPU or CPU) memory; the message gives the asked size and what would help."""


def is_out_of_memory(error) -> bool:
    """torch's CUDA OOM, or the CPU allocator's "can't allocate memory" RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("allocate" in text and ("memory" in text or "bytes" in text))


@dataclass
class TextToVideoOutput:
    """``frames``: one video per prompt (x num_videos_per_prompt), each (F, H, W, 3).

    np: float32 array (B, F, H, W, 3) in [0, 1]; pt: the same as a tensor; pil: a list (per video)
    of lists of PIL images; latent: the final latents (B, 4, F, h, w).
    """

    frames: object


# ---------------------------------------------------------------------------------- finding weights
def hub_allow_patterns(repo_files, variant=None):
    """Which files of a Hub repository to download: the configs, the tokenizer and, for each model,
    the requested variant's weights, safetensors when the repository has them, else .bin."""
    from .checkpoint import DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, weight_candidates

    files = set(repo_files)
    patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*", "*/config.json"]
    for component, stems in (("unet", DIFFUSERS_WEIGHTS), ("vae", DIFFUSERS_WEIGHTS),
                             ("text_encoder", TRANSFORMERS_WEIGHTS)):
        for name in weight_candidates(stems, variant):
            if f"{component}/{name}" in files:
                patterns.append(f"{component}/{name}")
                if name.endswith(".index.json"):  # a sharded file: its shards too
                    patterns.append(f"{component}/{name.split('.')[0]}*")
                break
        else:
            have = sorted(f for f in files if f.startswith(component + "/"))
            raise FileNotFoundError(f"{component}: no weights for variant={variant!r} in the repository "
                                    f"(it has {', '.join(have) or 'no such folder'})")
    return patterns


def resolve_checkpoint(name_or_path, variant=None, local_files_only=False) -> Path:
    """A local folder as is; "toy" -> the trained toy checkpoint shipped with the package; "tiny" ->
    the embedded tiny checkpoint (random weights); else a Hub repository id, downloaded (only the
    needed files) or taken from the Hub cache when offline."""
    from .tiny import tiny_checkpoint
    from .toy import toy_checkpoint

    name = os.fspath(name_or_path)
    if name == "tiny":
        return tiny_checkpoint()
    if name == "toy":
        return toy_checkpoint()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"checkpoint not found: {name!r} is neither a folder nor a Hub id like "
                                f"'{REAL_CHECKPOINT}'")
    from huggingface_hub import snapshot_download

    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline:
        patterns = None
    else:
        from huggingface_hub import list_repo_files

        patterns = hub_allow_patterns(list_repo_files(name), variant)
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=offline))
    except Exception as e:  # no network, not in cache, gated...: say what to do
        how = "it is not in the local Hub cache (offline mode)" if offline else f"the download failed ({e})"
        raise FileNotFoundError(f"cannot get {name!r}: {how}. Download it once with network access, or pass "
                                f"a local folder, or use 'toy' for the embedded trained toy checkpoint.") from e


def check_architecture(folder: Path):
    """Refuse a checkpoint that is not this architecture, naming what was found."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else None
    if index is None:
        raise FileNotFoundError(f"{folder}: no model_index.json; not a pipeline checkpoint folder")
    found = {"_class_name": index.get("_class_name")}
    for comp in ("unet", "vae", "text_encoder"):
        entry = index.get(comp)
        found[comp] = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else entry
    wrong = {k: v for k, v in found.items() if v not in EXPECTED_CLASSES[k]}
    if wrong:
        what = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise CheckpointError(f"{folder} is not a ModelScope text-to-video checkpoint: found {what}; expected "
                              f"TextToVideoSDPipeline with UNet3DConditionModel, AutoencoderKL and CLIPTextModel")
    for comp in COMPONENTS:
        if not (folder / comp).is_dir():
            raise FileNotFoundError(f"{folder}: component folder {comp}/ is missing")


# ------------------------------------------------------------------------------------- the pipeline
class TextToVideoPipeline:
    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.offload_device = None
        self._progress = {}

    @classmethod
    def from_pretrained(cls, repo_id_or_path="toy", torch_dtype=None, variant=None, device=None,
                        local_files_only=False):
        """Load all five components; every model is built on the meta device, then gets its weights."""
        from .schedulers import from_config as scheduler_from_config
        from .text import CLIPTextEncoder, Tokenizer
        from .unet import UNet3DConditionModel
        from .vae import AutoencoderKL

        folder = resolve_checkpoint(repo_id_or_path, variant, local_files_only)
        check_architecture(folder)
        kw = dict(torch_dtype=torch_dtype, variant=variant)
        unet = UNet3DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
        text_encoder = CLIPTextEncoder.from_pretrained(folder, subfolder="text_encoder", **kw)
        tokenizer = Tokenizer.from_pretrained(folder, subfolder="tokenizer")
        scheduler = scheduler_from_config(read_json(folder / "scheduler" / "scheduler_config.json"))
        pipe = cls(unet, vae, text_encoder, tokenizer, scheduler)
        pipe.name_or_path = str(repo_id_or_path)
        return pipe.to(device) if device is not None else pipe

    # ---------------------------------------------------------------------------- placement
    @property
    def models(self):
        return {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae}

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
        if device is not None:
            self.offload_device = None
        return self

    def enable_model_cpu_offload(self, device="cuda"):
        """Keep the models in CPU memory; move each to ``device`` only while it runs (text encoder,
        then UNet, then VAE). Without a GPU this changes nothing and says so."""
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            import warnings

            warnings.warn("enable_model_cpu_offload: no CUDA GPU here, so everything stays on the CPU",
                          stacklevel=2)
            return
        self.to("cpu")
        self.offload_device = device

    @contextlib.contextmanager
    def _running(self, model):
        """Put ``model`` on the execution device for the duration (offload), then back on the CPU."""
        if not self.offload_device:
            yield model
            return
        model.to(self.offload_device)
        try:
            yield model
        finally:
            model.to("cpu")

    def enable_vae_slicing(self, frames_per_slice=1):
        self.vae.enable_slicing(frames_per_slice)

    def disable_vae_slicing(self):
        self.vae.disable_slicing()

    def enable_vae_tiling(self, tile_size=None, overlap=None):
        self.vae.enable_tiling(tile_size, overlap)

    def disable_vae_tiling(self):
        self.vae.disable_tiling()

    def enable_attention_slicing(self, slice_size="auto"):
        self.unet.enable_attention_slicing(slice_size)

    def disable_attention_slicing(self):
        self.unet.disable_attention_slicing()

    def set_progress_bar_config(self, **kwargs):
        """Options for the tqdm bar, e.g. ``disable=True``."""
        self._progress = dict(kwargs)

    def progress_bar(self, total):
        from tqdm.auto import tqdm

        return tqdm(total=total, **{"desc": "denoising", **self._progress})

    # ---------------------------------------------------------------------------- the steps
    def encode_prompt(self, prompt, device, num_videos_per_prompt=1, do_classifier_free_guidance=True,
                      negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None, clip_skip=None):
        """(cond, uncond) text embeddings, each (B * num_videos_per_prompt, 77, D); uncond is None
        without guidance. Given embeddings are used as they are."""
        with self._running(self.text_encoder) as encoder:
            def embed(texts):
                ids = self.tokenizer(texts).input_ids.to(encoder.device)
                return encoder(ids, clip_skip=clip_skip)

            with torch.no_grad():
                if prompt_embeds is None:
                    prompt_embeds = embed(prompt)
                batch = prompt_embeds.shape[0]
                if do_classifier_free_guidance and negative_prompt_embeds is None:
                    negative = negative_prompt if negative_prompt is not None else ""
                    negative = [negative] * batch if isinstance(negative, str) else negative
                    negative_prompt_embeds = embed(negative)
        dtype = self.text_encoder.dtype

        def per_video(e):
            return None if e is None else e.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, 0)

        return per_video(prompt_embeds), per_video(negative_prompt_embeds if do_classifier_free_guidance else None)

    def prepare_latents(self, batch, frames, height, width, dtype, device, generator, latents=None,
                        noise_shared_ratio=0.0):
        """Starting noise (B, C, F, H/8, W/8) times ``init_noise_sigma``.

        VideoFusion's decomposed noise (``noise_shared_ratio`` = r > 0): every frame's noise is
        sqrt(r) * base + sqrt(1 - r) * residual_f, with one ``base`` shared by all frames, so the
        frames start correlated (correlation r) while each is still standard normal.
        """
        f = self.vae.spatial_factor
        shape = (batch, self.unet.config.in_channels, frames, height // f, width // f)
        if latents is None:
            latents = draw_noise(shape, generator, device, dtype)
            if noise_shared_ratio:
                base = draw_noise((batch, shape[1], 1, *shape[3:]), generator, device, dtype)
                latents = math.sqrt(noise_shared_ratio) * base + math.sqrt(1 - noise_shared_ratio) * latents
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents: expected shape {shape} for these arguments, got {tuple(latents.shape)}")
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def decode_latents(self, latents):
        """latents (B, C, F, h, w) -> frames (B, F, H, W, 3) float32 in [0, 1]."""
        with self._running(self.vae) as vae, torch.no_grad():
            return vae.decode_video(latents.to(vae.device))

    # ---------------------------------------------------------------------------- generation
    def __call__(self, prompt=None, height=None, width=None, num_frames=16, num_inference_steps=50,
                 guidance_scale=9.0, negative_prompt=None, eta=0.0, generator=None, latents=None,
                 prompt_embeds=None, negative_prompt_embeds=None, output_type="np", return_dict=True,
                 callback_on_step_end=None, clip_skip=None, num_videos_per_prompt=1, noise_shared_ratio=0.0):
        """Generate videos; see the module docstring for the steps. Returns ``TextToVideoOutput``."""
        f = self.vae.spatial_factor
        height = self.unet.config.sample_size * f if height is None else height
        width = self.unet.config.sample_size * f if width is None else width
        batch = self.check_inputs(prompt, height, width, num_frames, num_inference_steps, guidance_scale,
                                  negative_prompt, eta, generator, prompt_embeds, negative_prompt_embeds,
                                  output_type, num_videos_per_prompt, noise_shared_ratio, latents, callback_on_step_end)
        with self._explain_out_of_memory(batch * num_videos_per_prompt, num_frames, height, width,
                                         num_inference_steps):
            return self._generate(prompt, height, width, num_frames, num_inference_steps, guidance_scale,
                                  negative_prompt, eta, generator, latents, prompt_embeds, negative_prompt_embeds,
                                  output_type, return_dict, callback_on_step_end, clip_skip, num_videos_per_prompt,
                                  noise_shared_ratio, batch)

    def _generate(self, prompt, height, width, num_frames, num_inference_steps, guidance_scale, negative_prompt,
                  eta, generator, latents, prompt_embeds, negative_prompt_embeds, output_type, return_dict,
                  callback_on_step_end, clip_skip, num_videos_per_prompt, noise_shared_ratio, batch):
        device = self.device
        guided = guidance_scale > 1.0
        cond, uncond = self.encode_prompt(prompt, device, num_videos_per_prompt, guided, negative_prompt,
                                          prompt_embeds, negative_prompt_embeds, clip_skip)
        context = torch.cat([uncond, cond]) if guided else cond

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        n = batch * num_videos_per_prompt
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"generator: a list of {len(generator)} generators for {n} videos; pass one per video")
        x = self.prepare_latents(n, num_frames, height, width, context.dtype, device, generator, latents,
                                 noise_shared_ratio)
        flags = []
        with self._running(self.unet) as unet, self.progress_bar(len(self.scheduler.timesteps)) as bar:
            for i, t in enumerate(self.scheduler.timesteps):
                x_in = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
                with torch.no_grad():
                    eps = unet(x_in, t, context)
                if guided:
                    eps_uncond, eps_cond = eps.chunk(2)
                    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                x, x0 = self.step(eps, t, x, eta=eta, generator=generator)
                # finiteness flags stay on the device until read: on a GPU a read makes the CPU wait for the
                # GPU, so they are read every few steps there (and at the end, and before a callback sees the
                # latents); on the CPU a read is free, so after every step
                flags.append((i, t, torch.isfinite(x).all()))
                every = 1 if x.device.type == "cpu" else CHECK_EVERY
                if len(flags) >= every or i == len(self.scheduler.timesteps) - 1 or callback_on_step_end:
                    self._check_finite(flags, guidance_scale)
                if callback_on_step_end is not None:
                    update = callback_on_step_end(self, i, t, {"latents": x, "pred_original_sample": x0})
                    if isinstance(update, dict) and "latents" in update:
                        if not torch.is_tensor(update["latents"]) or update["latents"].shape != x.shape:
                            raise ValueError(f"callback_on_step_end returned latents of shape "
                                             f"{getattr(update['latents'], 'shape', None)}; expected {tuple(x.shape)}")
                        x = update["latents"]
                bar.update()
        if output_type == "latent":
            video = x
        else:
            frames = self.decode_latents(x)
            if not torch.isfinite(frames).all():
                raise FloatingPointError(
                    f"the VAE decoded NaN/inf frames from finite latents (max |latents| {x.abs().max().item():.3g}). "
                    f"In float16 the VAE overflows: load with torch_dtype=torch.float32, or lower guidance_scale "
                    f"(now {guidance_scale}).")
            video = frames.cpu().numpy() if output_type == "np" else frames
            if output_type == "pil":
                from PIL import Image

                video = [[Image.fromarray(im) for im in (v * 255).round().to(torch.uint8).cpu().numpy()]
                         for v in frames]
        return TextToVideoOutput(frames=video) if return_dict else (video,)

    @contextlib.contextmanager
    def _explain_out_of_memory(self, videos, frames, height, width, steps):
        """Re-raise running out of memory as OutOfMemoryError: what was asked, which options are on, what helps."""
        try:
            yield
        except (RuntimeError, MemoryError) as e:
            if not (isinstance(e, MemoryError) or is_out_of_memory(e)) or isinstance(e, OutOfMemoryError):
                raise
            on_off = {"enable_model_cpu_offload()": bool(self.offload_device),
                      "enable_vae_slicing()": self.vae.use_slicing,
                      "enable_vae_tiling()": self.vae.use_tiling,
                      "enable_attention_slicing()": any(m.backend == "sliced" for m in self.unet.attention_modules())}
            state = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in on_off.items())
            helps = [k for k, v in on_off.items() if not v]
            raise OutOfMemoryError(
                f"out of memory on {self.device} while generating {videos} video(s) x {frames} frames x "
                f"{height}x{width} pixels ({steps} steps, {self.dtype}). Options now: {state}. What would help: "
                f"{', '.join(helps) + '; ' if helps else ''}fewer frames (num_frames={frames}), a smaller "
                f"height/width, fewer videos per call (now {videos}), or torch_dtype=torch.float16 on a GPU. "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e

    def _check_finite(self, flags, guidance_scale):
        """Raise at the first step whose latents were not finite; ``flags`` is [(i, t, finite tensor)]."""
        ok = torch.stack([f for _, _, f in flags]).cpu()
        bad = [(i, t) for (i, t, _), good in zip(flags, ok) if not good]
        flags.clear()
        if bad:
            i, t = bad[0]
            raise FloatingPointError(
                f"the latents became NaN/inf at step {i + 1} of {len(self.scheduler.timesteps)} (t={int(t)}). "
                f"In float16 this is usually an overflow: load with torch_dtype=torch.float32, or lower "
                f"guidance_scale (now {guidance_scale}).")

    def step(self, eps, t, x, **kwargs):
        """One scheduler step on the video, frames folded into the batch as the reference does it
        (this order decides how the noise of stochastic samplers is laid out)."""
        b, c, f, h, w = x.shape
        fold = lambda v: v.transpose(1, 2).reshape(b * f, c, h, w)  # noqa: E731
        out = self.scheduler.step(fold(eps), t, fold(x), **kwargs)
        unfold = lambda v: None if v is None else v.reshape(b, f, c, h, w).transpose(1, 2)  # noqa: E731
        return unfold(out.prev_sample), unfold(getattr(out, "pred_original_sample", None))

    # ---------------------------------------------------------------------------- validation
    def check_inputs(self, prompt, height, width, num_frames, steps, guidance_scale, negative_prompt, eta, generator,
                     prompt_embeds, negative_prompt_embeds, output_type, num_videos_per_prompt, noise_shared_ratio,
                     latents=None, callback_on_step_end=None):
        """Return the number of prompts; raise ValueError (naming the argument) on anything off."""
        f = self.vae.spatial_factor

        def positive_int(name, v):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name, v in (("height", height), ("width", width)):
            positive_int(name, v)
            if v % f:
                raise ValueError(f"{name} must be divisible by {f} (the VAE's downsampling), got {v}")
            if v > 8192:
                raise ValueError(f"{name}={v} is beyond any sensible video size (at most 8192)")
        positive_int("num_frames", num_frames)
        if num_frames > MAX_FRAMES:
            raise ValueError(f"num_frames={num_frames} is beyond any sensible video (at most {MAX_FRAMES})")
        positive_int("num_inference_steps", steps)
        positive_int("num_videos_per_prompt", num_videos_per_prompt)
        for name, v in (("guidance_scale", guidance_scale), ("eta", eta), ("noise_shared_ratio", noise_shared_ratio)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if eta > 1:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        if noise_shared_ratio >= 1:
            raise ValueError(f"noise_shared_ratio must be in [0, 1), got {noise_shared_ratio}")
        if not isinstance(output_type, str) or output_type not in OUTPUT_TYPES:  # `in` on an array compares elementwise
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r:.80}")
        if generator is not None and not isinstance(generator, torch.Generator) and not (
                isinstance(generator, list) and all(isinstance(g, torch.Generator) for g in generator)):
            raise ValueError(f"generator must be a torch.Generator or a list of them, got {generator!r:.80}")
        if latents is not None and not (torch.is_tensor(latents) and latents.is_floating_point()):
            raise ValueError(f"latents must be a float tensor, got {getattr(latents, 'dtype', type(latents).__name__)}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both")
        if prompt is None and prompt_embeds is None:
            raise ValueError("prompt is missing (or pass prompt_embeds)")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass either negative_prompt or negative_prompt_embeds, not both")
        if prompt is not None:
            if isinstance(prompt, str):
                prompts = [prompt]
            elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
                prompts = list(prompt)
            else:
                raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r:.80}")
            batch = len(prompts)
        else:
            dim = self.unet.config.cross_attention_dim
            if not torch.is_tensor(prompt_embeds) or prompt_embeds.ndim != 3 or not prompt_embeds.is_floating_point() \
                    or prompt_embeds.shape[0] < 1 or prompt_embeds.shape[1] < 1 or prompt_embeds.shape[2] != dim:
                raise ValueError(f"prompt_embeds must be a float tensor (batch, tokens, {dim}), got "
                                 f"{getattr(prompt_embeds, 'shape', type(prompt_embeds).__name__)} "
                                 f"{getattr(prompt_embeds, 'dtype', '')}")
            batch = prompt_embeds.shape[0]
        if batch * num_videos_per_prompt > MAX_VIDEOS:
            raise ValueError(f"{batch} prompt(s) x num_videos_per_prompt={num_videos_per_prompt} is more than "
                             f"{MAX_VIDEOS} videos in one call; split it")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if not (isinstance(negative_prompt, (list, tuple)) and all(isinstance(p, str) for p in negative_prompt)):
                raise ValueError(f"negative_prompt must be a string or a list of strings, got {negative_prompt!r:.80}")
            if len(negative_prompt) != batch:
                raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but prompt has {batch}")
        if negative_prompt_embeds is not None:
            if prompt_embeds is None or not torch.is_tensor(negative_prompt_embeds) or \
                    negative_prompt_embeds.shape != prompt_embeds.shape or \
                    not negative_prompt_embeds.is_floating_point():
                want, got = getattr(prompt_embeds, "shape", None), getattr(negative_prompt_embeds, "shape", None)
                raise ValueError(f"negative_prompt_embeds must come with prompt_embeds and have its shape {want}, "
                                 f"got {got}")
        return batch

    def __repr__(self):
        parts = [f"  {k}: {type(v).__name__} ({v.num_parameters():,} parameters, {v.dtype}, {v.device})"
                 for k, v in self.models.items()]
        return "\n".join([f"TextToVideoPipeline({getattr(self, 'name_or_path', '')})", *parts,
                          f"  scheduler: {type(self.scheduler).__name__}"])
