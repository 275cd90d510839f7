"""The studio's logic as plain functions (no ipywidgets, no browser): ``Settings`` -> ``generate`` ->
``Result`` (frames, an mp4 file, the denoising trajectory), and the HTML the studio shows.

The pipeline's own ``callback_on_step_end`` records the trajectory (``StepRecorder``); the checkpoint's
recommended settings (``pipe.recommended``) are the starting values.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..checks import integer, one_of
from ..display import show_video
from ..distill import SHIPPED, distilled_settings
from ..lora_loading import load_adding_guidance_embedding
from ..schedulers import SCHEDULER_NAMES, from_name
from ..techniques.consistency import remove_guidance_embedding
from ..video import export_to_video
from ..weights import KNOWN_ADAPTERS

FPS = 8

# The "Few steps" menu: a consistency-distilled adapter, loaded as the adapter named by its key, sampled at its own
# settings (sampler, steps, guidance: ``few_steps_settings``). The Hub's two need ms-1.7b (and the Hub, or its cache).
FEW_STEPS = {
    "off": None,
    "few-steps-toy-student": dict(label="the toy's distilled student (t2vlab distill)", source=str(SHIPPED)),
    "few-steps-mcm-webvid": dict(label="MCM, WebVid (ms-1.7b)", source="yhzhai/mcm", subfolder="modelscopet2v-webvid"),
    "few-steps-t2v-turbo": dict(label="T2V-Turbo-MS (ms-1.7b)", source="jiachenli-ucsb/T2V-Turbo-MS",
                                weight_name="unet_lora.pt"),
}


@dataclasses.dataclass
class Settings:
    """Everything the studio asks for one generation."""

    prompt: str = "an astronaut riding a horse"
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 9.0
    frames: int = 16
    height: int = 256
    width: int = 256
    seed: int = 0
    scheduler: str = "ddim"
    fp16: bool = False
    offload: bool = False
    vae_slicing: bool = False
    free_noise: int = 0         # FreeNoise's context length; 0: off
    free_init: int = 1          # FreeInit's passes; 1: off (plain sampling)
    freeu: bool = False
    prompt_at: str = ""         # prompt travel: lines "FRAME: text" (the prompt is frame 0's text)
    deepcache: int = 1          # DeepCache's interval (t2vlab.techniques.deepcache); 1: off (every step a full one)
    compiled: bool = False      # pipe.compile() (t2vlab.compiled); GPU only here: inductor on a CPU takes minutes
    loop: bool = False          # the last frame flows into the first (t2vlab.techniques.loops)
    prompt_syntax: str = "plain"  # how the prompt is read: "plain", "a1111" or "compel" weights (prompt_weighting)
    few_steps: str = "off"      # a key of FEW_STEPS: a consistency-distilled adapter ("off": none)

    def summary(self) -> str:
        memory = [name for name, on in (("fp16", self.fp16), ("offload", self.offload),
                                         ("VAE slicing", self.vae_slicing)) if on]
        extras = [name for name, on in ((f"FreeNoise {self.free_noise}", self.free_noise),
                                        (f"FreeInit x{self.free_init}", self.free_init > 1), ("FreeU", self.freeu),
                                        ("prompt travel", self.prompt_at.strip()),
                                        (f"DeepCache {self.deepcache}", self.deepcache > 1),
                                        ("compiled", self.compiled), ("loop", self.loop),
                                        (f"{self.prompt_syntax} prompt syntax", self.prompt_syntax != "plain"),
                                        (self.few_steps.removeprefix("few-steps-"), self.few_steps != "off"))
                  if on]
        neg = f", negative {self.negative_prompt!r}" if self.negative_prompt else ""
        return (f"{self.frames} frames {self.width}x{self.height}, {self.steps} {self.scheduler} steps, "
                f"guidance {self.guidance:g}, seed {self.seed}{neg}" + (f", {' + '.join(memory)}" if memory else "")
                + (f", {', '.join(extras)}" if extras else ""))

    def keyframes(self) -> dict:
        """The prompt-travel lines as {frame: text}, the prompt at frame 0 (ValueError naming a bad line)."""
        frames = {0: self.prompt}
        for n, line in enumerate(self.prompt_at.splitlines(), 1):
            if not line.strip():
                continue
            frame, sep, text = line.partition(":")
            if not sep or not frame.strip().isdigit() or not text.strip():
                raise ValueError(f"prompt travel, line {n}: write 'FRAME: text' (e.g. '16: a blue square'), "
                                 f"got {line!r}")
            frames[int(frame)] = text.strip()
        return frames


@dataclasses.dataclass
class Trajectory:
    """The denoising run, step by step: the timestep, the latents after the step and the model's
    prediction of the clean latents (x0) at that step, each (C, F, h, w) on the CPU."""

    timesteps: list = dataclasses.field(default_factory=list)
    latents: list = dataclasses.field(default_factory=list)
    predictions: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.timesteps)


class StepRecorder:
    """A ``callback_on_step_end`` for the pipeline: keeps a CPU copy of the latents and of the
    predicted x0 after every step (first video of the batch), and tells ``on_step(done, total)``.
    With several sampling passes (FreeInit) the steps are counted over all of them and the trajectory
    is the last pass's."""

    def __init__(self, total, on_step=None, keep=True):
        self.total, self.on_step, self.keep = total, on_step, keep
        self.trajectory = Trajectory()
        self.done = 0

    def __call__(self, pipe, i, t, tensors):
        self.done += 1
        if i == 0:  # a new pass starts
            self.trajectory = Trajectory()
        if self.keep:
            x0 = tensors.get("pred_original_sample")
            self.trajectory.timesteps.append(float(t))
            self.trajectory.latents.append(tensors["latents"][0].detach().float().cpu().clone())
            self.trajectory.predictions.append(None if x0 is None else x0[0].detach().float().cpu().clone())
        if self.on_step is not None:
            self.on_step(self.done, self.total)
        return {}


@dataclasses.dataclass
class Result:
    """One finished generation."""

    settings: Settings
    frames: np.ndarray          # (F, H, W, 3) float32 in [0, 1]
    video_path: str             # the mp4 on disk
    trajectory: Trajectory
    seconds: float
    notes: list = dataclasses.field(default_factory=list)  # what the memory options did (or could not do)

    def video_bytes(self) -> bytes:
        return Path(self.video_path).read_bytes()


def configure(pipe, settings) -> list[str]:
    """Set the scheduler and the memory options on ``pipe``; return notes on what could not be done."""
    notes = []
    one_of("scheduler", settings.scheduler, SCHEDULER_NAMES)
    pipe.scheduler = from_name(settings.scheduler, pipe.scheduler.config)
    cuda = torch.cuda.is_available()
    if settings.fp16 and not cuda:
        notes.append("fp16 needs a GPU: ran in float32")
    want = torch.float16 if settings.fp16 and cuda else torch.float32
    if pipe.dtype != want:
        pipe.to(dtype=want)
    if settings.offload and not cuda:
        notes.append("offload needs a GPU: everything stayed on the CPU")
    elif settings.offload and not pipe.offload_device:
        pipe.enable_model_cpu_offload()
    elif not settings.offload and pipe.offload_device:
        pipe.to(pipe.offload_device)
    if settings.vae_slicing:
        pipe.enable_vae_slicing()
    else:
        pipe.disable_vae_slicing()
    if settings.free_noise:
        pipe.enable_free_noise(context_length=settings.free_noise, context_stride=max(1, settings.free_noise // 4))
    else:
        pipe.disable_free_noise()
    if settings.free_init > 1:
        pipe.enable_free_init(num_iters=settings.free_init)
    else:
        pipe.disable_free_init()
    if settings.freeu:
        pipe.enable_freeu()
    else:
        pipe.disable_freeu()
    configure_speed(pipe, settings, cuda, notes)
    configure_few_steps(pipe, settings)
    return notes


def few_steps_settings(key) -> dict | None:
    """{"scheduler", "steps", "guidance"} that the ``FEW_STEPS`` adapter ``key`` samples at (None for "off"):
    the shipped student's from its training.json, the Hub's two from ``weights.KNOWN_ADAPTERS``."""
    entry = FEW_STEPS[one_of("few_steps", key, list(FEW_STEPS))]
    if entry is None:
        return None
    if entry["source"] == str(SHIPPED):
        s = distilled_settings(SHIPPED)
        return dict(scheduler=s["scheduler"], steps=s["num_inference_steps"], guidance=s["guidance_scale"])
    known = KNOWN_ADAPTERS[entry["source"], entry.get("subfolder") or entry["weight_name"]]
    return dict(scheduler=known["scheduler"], steps=known["num_inference_steps"], guidance=known["guidance_scale"])


def configure_few_steps(pipe, settings):
    """The ``FEW_STEPS`` adapter ``settings.few_steps`` loaded (once) and the other menu adapters taken off, with the
    guidance embedding T2V-Turbo's needs given and taken away with it. The sampler, steps and guidance are the
    settings' (the studio sets them from ``few_steps_settings`` when the menu changes)."""
    want = FEW_STEPS[one_of("few_steps", settings.few_steps, list(FEW_STEPS))]
    for name in [n for n in pipe.lora_sources if n in FEW_STEPS and n != settings.few_steps]:
        pipe.delete_adapters([name])
        cond_proj = pipe.unet.time_embedding.cond_proj
        if cond_proj is not None and hasattr(cond_proj, "drawn_from_seed"):  # ours, for T2V-Turbo's list
            remove_guidance_embedding(pipe.unet)
    if want is not None and settings.few_steps not in pipe.lora_sources:
        load_adding_guidance_embedding(pipe, want["source"], adapter_name=settings.few_steps,
                                       subfolder=want.get("subfolder"), weight_name=want.get("weight_name"))


def configure_speed(pipe, settings, cuda, notes):
    """DeepCache and the compiled path as ``settings`` ask (the two do not combine: DeepCache wins, said)."""
    compiled = settings.compiled and cuda
    if settings.compiled and not cuda:
        notes.append("compile needs a GPU here (inductor's first call takes minutes on a CPU): ran eager")
    if compiled and settings.deepcache > 1:
        notes.append("DeepCache and compile do not combine: ran DeepCache, eager")
        compiled = False
    if not compiled and pipe.compiled:
        pipe.uncompile()
    if settings.deepcache > 1:
        pipe.enable_deepcache(cache_interval=settings.deepcache)
    else:
        pipe.disable_deepcache()
    if compiled and not pipe.compiled:
        pipe.compile()


def check_settings(settings, factor=8):
    """Raise ValueError with a plain message for settings the pipeline would refuse, before any work."""
    if not settings.prompt.strip():
        raise ValueError("the prompt is empty: describe the video you want")
    for name in ("height", "width"):
        integer(name, getattr(settings, name), low=factor, multiple_of=factor, hint=" (the VAE's downsampling)")


def generate(pipe, settings, on_step=None, out_dir=None, record=True) -> Result:
    """Run the pipeline with ``settings``; write the mp4 into ``out_dir`` (a new temporary folder if
    None). ``on_step(done, total)`` is called after every denoising step."""
    check_settings(settings, pipe.vae.spatial_factor)
    prompt = settings.keyframes() if settings.prompt_at.strip() else settings.prompt
    notes = configure(pipe, settings)
    recorder = StepRecorder(settings.steps * max(settings.free_init, 1), on_step, keep=record)
    generator = torch.Generator("cpu").manual_seed(int(settings.seed))
    start = time.perf_counter()
    saved = dict(pipe.progress_bar_config)
    pipe.set_progress_bar_config(disable=True)  # the widget has its own progress bar
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = pipe(prompt, negative_prompt=settings.negative_prompt or None, height=settings.height,
                       width=settings.width, num_frames=settings.frames, num_inference_steps=settings.steps,
                       guidance_scale=settings.guidance, generator=generator, callback_on_step_end=recorder,
                       loop=settings.loop, prompt_syntax=settings.prompt_syntax)
    finally:
        pipe.set_progress_bar_config(**saved)
    notes += [str(w.message) for w in caught]
    frames = out.frames[0]
    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="t2vlab-studio-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"t2vlab-{time.strftime('%Y%m%d-%H%M%S')}-seed{settings.seed}"
    target = out_dir / f"{stem}.mp4"
    n = 1
    while target.exists():  # two runs within a second: never replace an earlier result
        n += 1
        target = out_dir / f"{stem}-{n}.mp4"
    path = export_to_video(frames, os.fspath(target), fps=FPS)
    return Result(dataclasses.replace(settings), frames, path, recorder.trajectory, time.perf_counter() - start,
                  notes)


def video_html(result, width=None) -> str:
    """An autoplaying, looping <video> of the result (base64 mp4 inside the page)."""
    width = width or max(256, min(512, result.settings.width))
    return show_video(result.video_path, width=width).data


def download_html(result, label="Download mp4") -> str:
    """An <a download> link carrying the mp4 as a data URL (works without access to the kernel's files)."""
    b64 = base64.b64encode(result.video_bytes()).decode("ascii")
    name = html.escape(os.path.basename(result.video_path))
    return (f'<a download="{name}" href="data:video/mp4;base64,{b64}" style="color:#1a6fd1;text-decoration:underline">'
            f"&#x2B07; {html.escape(label)} ({name})</a>")


def error_html(error) -> str:
    return ('<div style="border:1px solid #d33;background:#fee;color:#800;padding:6px 10px;border-radius:4px">'
            f"<b>Could not generate:</b> {html.escape(str(error))}</div>")
