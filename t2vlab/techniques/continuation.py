"""Continuation: a video made longer one chunk at a time, each chunk starting from the last frames of the one before.

    video = pipe("a red circle moving right", output_type="latent").frames          # chunk 1: 16 frames
    video = pipe.extend(video, "a red circle moving right", overlap=8, output_type="latent").frames   # + 8
    video = pipe.extend(video, "a blue circle moving right", overlap=8).frames      # + 8, a story: decoded

A chunk of ``num_frames`` frames is sampled with its first ``overlap`` frames held, as keyframes at full strength
(``techniques.keyframes``), to the video's last ``overlap`` frames; the chunk's other frames are new, and the video
grows by num_frames - overlap frames. The model only ever sees one chunk, so the video can be as long as wanted in
the memory of one chunk (the frames already made are kept, not recomputed); each chunk may have its own prompt.

The video's last frames are held as latents:

- given as latents (``output_type="latent"``), directly: at full strength the chunk's first ``overlap`` frames end
  up equal to them, so the chunk joins the video without a seam of the network's making, and nothing passes
  through the VAE between chunks;
- given as pixels, through the VAE (the encoder's mean): each chunk then starts from a round trip of the frames
  before it. The joined video keeps the given frames as they were and appends the chunk's new frames.

docs/benchmarks.md ("Directing a video") measures both, and the seams, against FreeNoise on a video of the same
length: continuation keeps each chunk within the clip length the model was trained on, FreeNoise samples the
whole video at once with windowed attention.
"""

from __future__ import annotations

import torch


def is_latent_video(video, channels=4) -> bool:
    """Latents (V, C, F, h, w) with C the VAE's latent channels (what ``output_type="latent"`` returns), not pixels
    (V, F, H, W, 3)."""
    return torch.is_tensor(video) and video.ndim == 5 and video.shape[1] == channels and video.shape[-1] != 3


def overlap_keyframes(tail):
    """The video's last frames' latents (V, C, overlap, h, w) -> keyframes {i: (V, C, h, w)} for the chunk's
    first ``overlap`` frames."""
    return {i: tail[:, :, i] for i in range(tail.shape[2])}


def join(video, chunk, overlap, latent):
    """The video followed by the chunk's new frames (those after the ``overlap`` held ones): latents
    (V, C, F, h, w) join along dim 2, pixels (V, F, H, W, 3) along dim 1."""
    time = 2 if latent else 1
    new = chunk.narrow(time, overlap, chunk.shape[time] - overlap)
    return torch.cat([video.to(device=new.device, dtype=new.dtype), new], dim=time)


def per_video(prompt, videos):
    """One prompt for each of ``videos`` videos: a string repeated; anything else as given."""
    return [prompt] * videos if isinstance(prompt, str) and videos > 1 else prompt
