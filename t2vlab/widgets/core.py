"""The logic behind the widgets, as plain functions: no ipywidgets, no browser.

Each widget in this package is a thin shell: it reads its controls, calls one of these functions and
puts the result (an HTML string, a PNG) on the page. Tests call the same functions directly.

* generation: ``Settings`` -> ``generate`` -> ``Result`` (frames, an mp4 file, the denoising trajectory);
* the denoising scrubber: ``decode_prediction``, ``latent_picture``, ``scrubber_figure``;
* the schedule explorer: ``schedule_curves``, ``noised_picture``, ``timesteps_for``, ``schedule_figure``;
* the attention explorer: ``record_attention`` -> ``AttentionRecord``, ``token_maps``, ``temporal_map``,
  ``attention_figure``.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so a notebook never shows them by
accident; ``figure_png`` turns one into PNG bytes for an ``ipywidgets.Image``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..schedulers import SCHEDULER_NAMES, from_name

FPS = 8


# ---------------------------------------------------------------------------------------- figures
def new_figure(width, height):
    """A matplotlib Figure that is not registered with pyplot (so notebooks don't display it by themselves)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def sample_picture(size=128) -> torch.Tensor:
    """Grace Hopper's portrait (it ships with matplotlib), centre-cropped and resized:
    (3, size, size) float32 in [-1, 1], the value range the diffusion model works in."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        img = torch.from_numpy(np.array(matplotlib.image.imread(f, format="jpg")))
    img = img.permute(2, 0, 1).float() / 255.0
    h, w = img.shape[1:]
    s = min(h, w)
    img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (img * 2 - 1).clamp(-1, 1)


def _show(x):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return (x.detach().float().cpu().permute(1, 2, 0) / 2 + 0.5).clamp(0, 1).numpy()


# ------------------------------------------------------------------------------------- generation
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

    def summary(self) -> str:
        memory = [name for name, on in (("fp16", self.fp16), ("offload", self.offload),
                                         ("VAE slicing", self.vae_slicing)) if on]
        neg = f", negative {self.negative_prompt!r}" if self.negative_prompt else ""
        return (f"{self.frames} frames {self.width}x{self.height}, {self.steps} {self.scheduler} steps, "
                f"guidance {self.guidance:g}, seed {self.seed}{neg}" + (f", {' + '.join(memory)}" if memory else ""))


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
    predicted x0 after every step (first video of the batch), and tells ``on_step(done, total)``."""

    def __init__(self, total, on_step=None, keep=True):
        self.total, self.on_step, self.keep = total, on_step, keep
        self.trajectory = Trajectory()

    def __call__(self, pipe, i, t, tensors):
        if self.keep:
            x0 = tensors.get("pred_original_sample")
            self.trajectory.timesteps.append(float(t))
            self.trajectory.latents.append(tensors["latents"][0].detach().float().cpu().clone())
            self.trajectory.predictions.append(None if x0 is None else x0[0].detach().float().cpu().clone())
        if self.on_step is not None:
            self.on_step(i + 1, self.total)
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
    if settings.scheduler not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {settings.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
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
    return notes


def check_settings(settings, factor=8):
    """Raise ValueError with a plain message for settings the pipeline would refuse, before any work."""
    if not settings.prompt.strip():
        raise ValueError("the prompt is empty: describe the video you want")
    for name in ("height", "width"):
        v = getattr(settings, name)
        if v < factor or v % factor:
            raise ValueError(f"{name} must be divisible by {factor} (the VAE's downsampling), got {v}")


def generate(pipe, settings, on_step=None, out_dir=None, record=True) -> Result:
    """Run the pipeline with ``settings``; write the mp4 into ``out_dir`` (a new temporary folder if
    None). ``on_step(done, total)`` is called after every denoising step."""
    check_settings(settings, pipe.vae.spatial_factor)
    notes = configure(pipe, settings)
    recorder = StepRecorder(settings.steps, on_step, keep=record)
    generator = torch.Generator("cpu").manual_seed(int(settings.seed))
    start = time.perf_counter()
    saved = dict(pipe._progress)
    pipe.set_progress_bar_config(disable=True)  # the widget has its own progress bar
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = pipe(settings.prompt, negative_prompt=settings.negative_prompt or None, height=settings.height,
                       width=settings.width, num_frames=settings.frames, num_inference_steps=settings.steps,
                       guidance_scale=settings.guidance, generator=generator, callback_on_step_end=recorder)
    finally:
        pipe.set_progress_bar_config(**saved)
    notes += [str(w.message) for w in caught]
    frames = out.frames[0]
    from ..video import export_to_video

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
    from ..video import show_video

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


# ---------------------------------------------------------------------------- denoising scrubber
def decode_prediction(pipe, latents) -> np.ndarray:
    """Latents (C, F, h, w) -> frames (F, H, W, 3) in [0, 1], through the pipeline's VAE."""
    return pipe.decode_latents(latents[None].to(pipe.vae.dtype))[0].cpu().numpy()


def latent_picture(latents, frame) -> np.ndarray:
    """One frame of latents (C, F, h, w) as a picture: its first three channels as RGB, each stretched
    to [0, 1] over the whole video (so frames and steps stay comparable)."""
    x = latents[:3].float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x[:, frame].permute(1, 2, 0).numpy()


def scrubber_figure(predicted_frames, latents, step, timestep, total, max_frames=8):
    """Top row: the decoded prediction of x0 for each frame; bottom row: the latents after the step."""
    count = min(len(predicted_frames), max_frames)
    fig = new_figure(1.5 * count, 3.4)
    axes = fig.subplots(2, count, squeeze=False)
    for f in range(count):
        axes[0, f].imshow(np.clip(predicted_frames[f], 0, 1))
        axes[0, f].set_title(f"frame {f}", fontsize=8)
        axes[1, f].imshow(latent_picture(latents, f), interpolation="nearest")
        for ax in axes[:, f]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("predicted x0", fontsize=8)
    axes[1, 0].set_ylabel("latents x_t", fontsize=8)
    fig.suptitle(f"step {step + 1} of {total} (t = {timestep:g})", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- schedule explorer
def default_scheduler_config():
    """The published model's scheduler config (DDIM, scaled-linear betas, 1000 training steps)."""
    from ..tiny import SCHEDULER_CONFIG

    return dict(SCHEDULER_CONFIG)


def schedule_curves(scheduler) -> dict:
    """alpha-bar_t (share of the signal's variance left at t) and SNR_t = abar / (1 - abar), t = 0..T-1."""
    abar = scheduler.alphas_cumprod.double()
    return {"t": np.arange(len(abar)), "alpha_bar": abar.numpy(), "snr": (abar / (1 - abar)).numpy()}


def noised_picture(picture, scheduler, t, seed=0) -> torch.Tensor:
    """q(x_t | x0): sqrt(abar_t) * picture + sqrt(1 - abar_t) * noise, same noise for every t (seeded)."""
    noise = torch.randn(picture.shape, generator=torch.Generator().manual_seed(seed))
    abar = scheduler.alphas_cumprod[int(t)]
    return abar.sqrt() * picture + (1 - abar).sqrt() * noise


def timesteps_for(name, steps, config=None) -> np.ndarray:
    """The timesteps the named scheduler visits in ``steps`` inference steps."""
    scheduler = from_name(name, config or default_scheduler_config())
    scheduler.set_timesteps(int(steps))
    return scheduler.timesteps.float().numpy()


def schedule_figure(picture, scheduler, t, timesteps=None, name=None, seed=0):
    """The picture noised to t, and alpha-bar and SNR over t with a marker at t (and, if given, the
    timesteps a sampler visits as ticks)."""
    curves = schedule_curves(scheduler)
    t = int(t)
    abar, snr = curves["alpha_bar"][t], curves["snr"][t]
    fig = new_figure(10, 3.2)
    ax_img, ax_abar, ax_snr = fig.subplots(1, 3, width_ratios=[1, 1.4, 1.4])
    ax_img.imshow(_show(noised_picture(picture, scheduler, t, seed)))
    ax_img.set_title(f"x_t at t = {t}", fontsize=10)
    ax_img.axis("off")
    ax_abar.plot(curves["t"], curves["alpha_bar"], label="alpha-bar (signal)")
    ax_abar.plot(curves["t"], 1 - curves["alpha_bar"], label="1 - alpha-bar (noise)", alpha=0.7)
    ax_abar.plot([t], [abar], "o", color="crimson")
    ax_abar.axvline(t, color="crimson", lw=0.8)
    ax_abar.set_xlabel("t")
    ax_abar.set_title(f"alpha-bar_t = {abar:.3f}", fontsize=10)
    ax_snr.semilogy(curves["t"], curves["snr"])
    ax_snr.plot([t], [snr], "o", color="crimson")
    ax_snr.axvline(t, color="crimson", lw=0.8)
    ax_snr.set_xlabel("t")
    ax_snr.set_title(f"SNR_t = {snr:.3g}", fontsize=10)
    if timesteps is not None and len(timesteps):
        label = f"{name or 'sampler'}: {len(timesteps)} steps"
        ax_abar.plot(timesteps, np.interp(timesteps, curves["t"], curves["alpha_bar"]), "|", color="k",
                     markersize=12, label=label)
        ax_snr.plot(timesteps, np.interp(timesteps, curves["t"], curves["snr"]), "|", color="k", markersize=12)
    ax_abar.legend(fontsize=7, loc="center right")
    return fig


# ---------------------------------------------------------------------------- attention explorer
@dataclasses.dataclass
class AttentionRecord:
    """Attention maps from one UNet call, averaged over heads, for the first video.

    cross[k]: (F, h_k * w_k, L), with L the tokenizer's length (77 for CLIP, 8 for the toy model): how
    much each pixel of each frame reads each prompt token, for the
    k-th cross-attention layer (resolution sizes[k]); temporal[k]: (h_k * w_k, F, F), how much each
    frame reads every frame at each pixel, for the k-th temporal transformer (temporal_sizes[k]).
    """

    prompt: str
    tokens: list          # readable text of the prompt's tokens, start and end included (padding left out)
    latent_size: tuple    # (h, w) of the latents
    frames: int
    timestep: float
    cross: list
    sizes: list
    temporal: list
    temporal_sizes: list


def _attention_modules(unet):
    """(cross-attention modules, temporal self-attention modules), each with the transformer they belong to."""
    from ..unet.layers import SpatialTransformer, TemporalTransformer

    cross, temporal = [], []
    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            cross += [(module, block.attn2) for block in module.transformer_blocks]
        elif isinstance(module, TemporalTransformer):
            temporal += [(module, block.attn1) for block in module.transformer_blocks]
    return cross, temporal


def record_attention(pipe, prompt, frames=8, height=None, width=None, latents=None, timestep=None, seed=0):
    """Run the UNet once on ``latents`` (noise if None) at ``timestep`` (default: the middle of the
    training schedule) with the prompt, recording every cross- and temporal attention map."""
    unet = pipe.unet
    f = pipe.vae.spatial_factor
    device, dtype = pipe.device, pipe.dtype
    if latents is None:
        height = height or unet.config.sample_size * f
        width = width or unet.config.sample_size * f
        shape = (1, unet.config.in_channels, frames, height // f, width // f)
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    elif latents.ndim == 4:
        latents = latents[None]
    timestep = pipe.scheduler.config.num_train_timesteps // 2 if timestep is None else timestep
    cond, _ = pipe.encode_prompt(prompt, device, do_classifier_free_guidance=False)
    cross, temporal = _attention_modules(unet)
    sizes = {}

    def remember_size(module, args):
        sizes[module] = tuple(args[0].shape[-2:])

    hooks = [m.register_forward_pre_hook(remember_size) for m, _ in cross + temporal]
    for _, attn in cross + temporal:
        attn.keep_probs = True
    try:
        with pipe._running(unet), torch.no_grad():
            unet(latents.to(device, dtype), torch.tensor(float(timestep)), cond.to(dtype))
        cross_maps = [attn.last_probs.float().mean(1).cpu() for _, attn in cross]          # (F, hw, L)
        temporal_maps = [attn.last_probs.float().mean(1).cpu() for _, attn in temporal]    # (hw, F, F)
    finally:
        for hook in hooks:
            hook.remove()
        for _, attn in cross + temporal:
            attn.keep_probs, attn.last_probs = False, None
    explained = pipe.tokenizer.explain(prompt)
    tokens = [piece.strip() or token for piece, token in zip(explained.pieces, explained.tokens)]
    return AttentionRecord(prompt, tokens, tuple(latents.shape[-2:]), latents.shape[2], float(timestep), cross_maps,
                           [sizes[m] for m, _ in cross], temporal_maps, [sizes[m] for m, _ in temporal])


def token_maps(record, frame) -> torch.Tensor:
    """(L, h, w): for every token, the share of attention each latent pixel of ``frame`` gives it,
    averaged over the cross-attention layers after upsampling each (bilinear) to the latents' size.
    At each pixel the L values sum to 1."""
    maps = []
    for probs, (h, w) in zip(record.cross, record.sizes):
        m = probs[frame].T.reshape(1, -1, h, w)  # (1, L, h, w)
        maps.append(F.interpolate(m, size=record.latent_size, mode="bilinear", align_corners=False)[0])
    return torch.stack(maps).mean(0)


def temporal_map(record, y, x) -> torch.Tensor:
    """(F, F): at latent pixel (y, x), row i is how much frame i attends to each frame, averaged over
    the temporal layers (each read at the same relative position). Rows sum to 1."""
    h, w = record.latent_size
    maps = []
    for probs, (hk, wk) in zip(record.temporal, record.temporal_sizes):
        yk, xk = min(int(y * hk / h), hk - 1), min(int(x * wk / w), wk - 1)
        maps.append(probs[yk * wk + xk])
    return torch.stack(maps).mean(0)


def attention_figure(record, token, frame, y, x):
    """Left: the token's cross-attention map over ``frame`` (pixel (y, x) marked); right: the temporal
    attention between frames at that pixel (the row of ``frame`` outlined)."""
    fig = new_figure(8.5, 3.6)
    ax_map, ax_time = fig.subplots(1, 2)
    m = token_maps(record, frame)[token]
    im = ax_map.imshow(m.numpy(), cmap="magma", interpolation="nearest")
    ax_map.plot([x], [y], "c+", markersize=12, mew=2)
    fig.colorbar(im, ax=ax_map, shrink=0.8)
    word = record.tokens[token] if token < len(record.tokens) else f"#{token}"
    ax_map.set_title(f"frame {frame}: attention to {word!r}", fontsize=10)
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    tm = temporal_map(record, y, x)
    im = ax_time.imshow(tm.numpy(), cmap="viridis", vmin=0, interpolation="nearest")
    ax_time.add_patch(_row_box(frame, record.frames))
    fig.colorbar(im, ax=ax_time, shrink=0.8)
    ax_time.set_xticks(range(record.frames))
    ax_time.set_yticks(range(record.frames))
    ax_time.set_xlabel("attends to frame")
    ax_time.set_ylabel("frame")
    ax_time.set_title(f"temporal attention at pixel ({y}, {x})", fontsize=10)
    fig.suptitle(f"{record.prompt!r} at t = {record.timestep:g}", fontsize=10)
    return fig


def _row_box(row, n):
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, row - 0.5), n, 1, fill=False, edgecolor="crimson", lw=2)
