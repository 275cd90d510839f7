"""Image-to-video: start a video from a still image by anchoring its first frame.

This is how sd-webui-text2video's "inpainting frames" start a ModelScope video from an image (the
masked sampling of latent-diffusion inpainting, with the mask over frames instead of pixels): after
every step of the reverse process the first frame's latents are replaced by the image's latents,
noised to the level the sample has just reached,

    x[:, :, 0]  <-  w * q(z_img, t') + (1 - w) * x[:, :, 0],      q(z, t') = scheduler.add_noise(z, eps0, t')

where t' is the timestep the step brought x to (the next one of the schedule; after the last step
the clean latents themselves), z_img the image's latents (the VAE's mean, scaled), and eps0 the noise
the first frame started from, so the anchor and the sample agree on which noise is being removed.
The other frames are never touched: the temporal convolutions and temporal attention carry the
image's content into them, and the prompt says how it moves.

w is ``image_strength``, the trade-off:

- 1 (default): the first frame is the image, up to the VAE's round trip, at every step and at the
  end. The model cannot adjust it, so when the image and the prompt disagree (a red circle, "a blue
  circle moving left") the following frames have to reconcile them on their own, and the first
  transition can jump.
- below 1: the first frame is pulled towards the image but shaped by the model too, so the video is
  more coherent with itself and with the prompt, and its first frame is only a blend of the image
  and what the model wanted (at the end literally w * image latents + (1 - w) * generated ones).
- 0: no anchor (plain text-to-video).

How closely the other frames follow the first is up to the model's temporal layers, not the anchor.
On the toy model they follow it only a little: frame 1's shape lands 12.1 pixels from the image's on
average, against 13.7 without the image (it moves about 4.5 pixels a frame; notebook 11).
"""

from __future__ import annotations

import torch

from .guards import check_image_anchor
from .inputs import image_input


class FirstFrameAnchor:
    """A step hook of ``TextToVideoPipeline.denoise``: the first frame follows the image (see the module).

    ``image_latents`` (1 or B, C, 1, h, w), scaled as the loop's latents; ``noise`` (B, C, 1, h, w), the
    first frame's starting noise at unit variance; ``timesteps`` the schedule the loop runs.
    """

    def __init__(self, image_latents, noise, scheduler, timesteps, strength=1.0):
        self.latents, self.noise, self.scheduler = image_latents, noise, scheduler
        self.timesteps, self.strength = timesteps, float(strength)

    def noised(self, i):
        """The image's latents at the level of the sample after step i (i = -1: before the first step)."""
        if i + 1 >= len(self.timesteps):
            return self.latents.expand_as(self.noise)
        return self.scheduler.add_noise(self.latents, self.noise, self.timesteps[i + 1:i + 2])

    def mix(self, x, z):
        x = x.clone()
        x[:, :, :1] = self.strength * z.to(x.dtype) + (1 - self.strength) * x[:, :, :1]
        return x

    def start(self, x):
        """The starting latents with the first frame anchored at the first timestep."""
        return self.mix(x, self.noised(-1))

    def __call__(self, i, t, x, x0):
        return self.mix(x, self.noised(i))


def anchor_first_frame(image_latents, start_latents, init_noise_sigma, scheduler, timesteps, strength=1.0):
    """The hook for a run starting from ``start_latents`` (B, C, F, h, w) (already times
    ``init_noise_sigma``): its first frame's noise is the anchor's noise."""
    noise = start_latents[:, :, :1] / torch.as_tensor(init_noise_sigma, dtype=start_latents.dtype)
    return FirstFrameAnchor(image_latents, noise, scheduler, timesteps, strength)


def image_and_size(pipe, image, height, width, strength):
    """The image as (H, W, 3) in [0, 1] (None without one) and the video's (height, width): as given, else
    the image's, else the size the model was trained at. The anchor's arguments are checked here."""
    pixels = None if image is None else torch.from_numpy(image_input(image))
    trained = pipe.unet.config.sample_size * pipe.vae.spatial_factor
    size = tuple(pixels.shape[:2]) if pixels is not None else (trained, trained)
    height, width = size[0] if height is None else height, size[1] if width is None else width
    if pixels is not None:
        check_image_anchor(pixels.shape, height, width, strength, pipe.vae.spatial_factor)
    return pixels, height, width


def anchored(pipe, pixels, x, strength, hooks):
    """With an image: the starting latents with their first frame anchored to it, and the anchor put first
    among the step hooks. Without one: both unchanged."""
    if pixels is None:
        return x, hooks
    image_latents = pipe.encode_video(pixels[None, None], sample=False).to(x.dtype)
    anchor = anchor_first_frame(image_latents, x, pipe.scheduler.init_noise_sigma, pipe.scheduler,
                                pipe.scheduler.timesteps, strength)
    return anchor.start(x), [anchor, *hooks]
