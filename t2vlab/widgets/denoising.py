"""The denoising scrubber's pictures: the model's guess of the clean video (x0, decoded) and the latents,
at each step of a finished run."""

from __future__ import annotations

import numpy as np

from .figures import new_figure


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
