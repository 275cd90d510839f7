"""In-between frames: a video's frame rate multiplied, the given frames held and the model drawing the rest.

    smooth = pipe.interpolate(video, "a red circle moving right", factor=2).frames    # F frames -> 2F - 1

Frame j of the given video becomes frame j * factor of a video of (F - 1) * factor + 1 frames: keyframes at every
``factor``-th position (``techniques.keyframes``, full strength unless ``keyframe_strength`` says otherwise), and
the frames between them are sampled. Nothing interpolates pixels: the temporal layers see the held frames on both
sides of each gap (the convolutions the next frames, the attention all of them) and draw what fits between, so
the motion is the model's idea of motion, not a cross-fade. Given pixels are encoded once (the VAE's mean), all
frames in one call; given latents are held directly.

How far the model follows depends on what it learnt: the toy moves its shapes about 4.5 pixels a frame, and with
factor 2 the new video has to move half as fast (docs/benchmarks.md, "Directing a video", measures whether each new
frame's shape lies between its neighbours'). RePaint's resampling of the held frames (``keyframe_resample=3``, with
DDIM: ``techniques.repaint``) makes the drawn frames agree with the held ones better: on the toy, every new frame
then lies between its neighbours.
"""

from __future__ import annotations


def keyframes_every(latents, factor):
    """A video's latents (V, C, F, h, w) -> keyframes {j * factor: (V, C, h, w)} for j in range(F)."""
    return {j * factor: latents[:, :, j] for j in range(latents.shape[2])}


def frames_after(frames, factor):
    """How many frames a video of ``frames`` has after interpolation by ``factor``: (frames - 1) * factor + 1."""
    return (frames - 1) * factor + 1
