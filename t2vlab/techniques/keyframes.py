"""Keyframes: frames of the video held to given latents while it is sampled (image-to-video is the one-keyframe
case, the first frame held to a still image).

This is how sd-webui-text2video's "inpainting frames" start a ModelScope video from an image (the masked
sampling of latent-diffusion inpainting, with the mask over frames instead of pixels): after every step of
the reverse process each held frame k's latents are replaced by its keyframe's latents, noised to the level
the sample has just reached,

    x[:, :, k]  <-  w_k(s) * q(z_k, t') + (1 - w_k(s)) * x[:, :, k],      q(z, t') = scheduler.add_noise(z, eps_k, t')

where t' is the timestep the step brought x to (the next one of the schedule; after the last step the clean
latents themselves), z_k the keyframe's latents (an image's: the VAE's mean, scaled), and eps_k the noise frame
k started from, so that the keyframe and the sample agree on which noise is being removed. The other frames
are never touched: the temporal convolutions and temporal attention carry the keyframes' content into them,
and the prompt says how they move.

The weight w_k(s) = strength_k * schedule(s), s = (i + 1) / N the share of the N steps done after step i (0
before the first):

- ``strength_k`` (``keyframe_strength``, one number or one per keyframe; ``image_strength`` for ``image=``):
  1 (default) makes the frame the keyframe, up to the VAE's round trip, at every step and at the end. The
  model cannot adjust it, so where a keyframe and the prompt (or two keyframes) disagree, the frames around
  it have to reconcile them on their own and a transition can jump. Below 1 the frame is pulled towards the
  keyframe but shaped by the model too (at the end literally w z_k + (1 - w) x_k); 0 is no keyframe.
- ``schedule`` (``keyframe_schedule``): None holds at full strength to the end. A number r in (0, 1] is
  sd-webui-text2video's "full strength early, released late": w = strength over the first r of the steps,
  then 0, so that the last (1 - r) of the steps, the ones that draw details, see the whole video free, and
  the held frames settle in with their neighbours (at the price of not being the keyframe exactly). Any
  callable ``f(s) -> [0, 1]`` is another schedule (e.g. ``lambda s: 1 - s``).

RePaint's resampling (Lugmayr et al., 2022; ``keyframe_resample=U``, ``techniques.repaint``): after each step
(and this hook), noise the sample back up to the step's start and take the step again, U passes in all, so that the
generated frames get more than one chance to agree with the held ones. Holding alone leaves a seam on the toy: with
DDIM, frames 0 and 7 held, 16 videos, the change into and out of a held frame is 1.45x the video's median frame
change at 30 steps (1.00x without keyframes); RePaint at about the same number of UNet calls makes it 1.25x (15
steps x 2) and 1.23x (10 x 3; mean 1.31x against 1.61x), the keyframes still exact. Releasing at 0.8 gets the median
to 0.99x but lets the keyframes go (1.65x the VAE's error at them) and leaves the worst seams (docs/benchmarks.md,
"Directing a video"). It needs a sampler without a history (DDIM, DDPM: DPM-Solver++ keeps its last steps), so it is
an option of the loop (``pipe.denoise(..., resample=U)``), not this hook: a hook cannot take a step again.

Where it plugs in: a step hook of the shared loop (``pipe.denoise(..., hooks=[anchor, ...])``), which the
pipeline's step 2 puts first when ``keyframes=`` (or ``image=``) is given; ``start`` anchors the starting
noise before the first step.
"""

from __future__ import annotations

import torch


def release_at(fraction):
    """The schedule that holds at full strength over the first ``fraction`` of the steps, then lets go."""
    return lambda s: 1.0 if s <= fraction else 0.0


class KeyframeAnchor:
    """A step hook of ``TextToVideoPipeline.denoise``: frames ``frames`` follow their keyframes (see the module).

    ``latents`` (1 or B, C, K, h, w): the K keyframes' latents, scaled as the loop's; ``frames``: their K frame
    indices; ``noise`` (B, C, K, h, w): those frames' starting noise at unit variance; ``timesteps``: the
    schedule the loop runs; ``strengths``: K numbers in [0, 1]; ``schedule``: None (always full strength),
    a release fraction in (0, 1], or a callable of the share of steps done.
    """

    def __init__(self, latents, frames, noise, scheduler, timesteps, strengths, schedule=None):
        self.latents, self.frames, self.noise, self.scheduler = latents, list(frames), noise, scheduler
        self.timesteps, self.strengths = timesteps, [float(s) for s in strengths]
        self.schedule = release_at(schedule) if isinstance(schedule, (int, float)) else schedule

    def noised(self, i):
        """The keyframes' latents at the level of the sample after step i (i = -1: before the first step)."""
        if i + 1 >= len(self.timesteps):
            return self.latents.expand_as(self.noise)
        return self.scheduler.add_noise(self.latents, self.noise, self.timesteps[i + 1:i + 2])

    def weight(self, k, i):
        """w_k after step i: the keyframe's strength times the schedule at the share of steps done."""
        if self.schedule is None:
            return self.strengths[k]
        return self.strengths[k] * float(self.schedule((i + 1) / len(self.timesteps)))

    def mix(self, x, z, i):
        x = x.clone()
        for k, f in enumerate(self.frames):
            w = self.weight(k, i)
            x[:, :, f:f + 1] = w * z[:, :, k:k + 1].to(x.dtype) + (1 - w) * x[:, :, f:f + 1]
        return x

    def start(self, x):
        """The starting latents with the held frames anchored at the first timestep."""
        return self.mix(x, self.noised(-1), -1)

    def __call__(self, i, t, x, x0):
        return self.mix(x, self.noised(i), i)


class FirstFrameAnchor(KeyframeAnchor):
    """Image-to-video: the one-keyframe case, frame 0 held to the image's latents (1 or B, C, 1, h, w) with weight
    ``strength``; ``noise`` (B, C, 1, h, w) is the first frame's starting noise."""

    def __init__(self, image_latents, noise, scheduler, timesteps, strength=1.0):
        super().__init__(image_latents, [0], noise, scheduler, timesteps, [strength])


def anchor_keyframes(latents, frames, start_latents, init_noise_sigma, scheduler, timesteps, strengths,
                     schedule=None):
    """The hook for a run starting from ``start_latents`` (B, C, F, h, w) (already times ``init_noise_sigma``):
    each held frame's noise is the noise that frame starts from."""
    noise = start_latents[:, :, list(frames)] / torch.as_tensor(init_noise_sigma, dtype=start_latents.dtype)
    return KeyframeAnchor(latents, frames, noise, scheduler, timesteps, strengths, schedule)


def is_latent_frame(value, channels=4) -> bool:
    """A keyframe given as latents, (C, h, w) or one per video (B, C, h, w) with C the VAE's latent channels, not an
    image (H, W, 3): what ``pipe.extend`` passes for a video's last frames, skipping the VAE's round trip."""
    return torch.is_tensor(value) and (
        (value.ndim == 3 and value.shape[0] == channels and value.shape[-1] != 3)
        or (value.ndim == 4 and value.shape[1] == channels))


def stack_keyframe_latents(latents: list) -> torch.Tensor:
    """K keyframe latents, each (1 or B, C, h, w) -> (1 or B, C, K, h, w), the ones shared by all videos repeated."""
    videos = max(z.shape[0] for z in latents)
    return torch.stack([z.expand(videos, *z.shape[1:]) for z in latents], dim=2)


def per_keyframe(strength, count) -> list[float]:
    """One strength per keyframe: a number for all ``count`` of them, or a list or tuple of ``count`` numbers."""
    if isinstance(strength, (list, tuple)):
        return [float(s) for s in strength]
    return [float(strength)] * count
