"""In-between frames (``pipe.interpolate``, t2vlab.techniques.interpolation): frame j of the video held as frame
j * factor of a longer video; the held frames come back exactly from latents; on the toy the new frames lie between
their neighbours and stand close to the frames they replace, which they do not when holding is switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.schedulers import from_name
from t2vlab.techniques.interpolation import frames_after, keyframes_every
from t2vlab.toy.evaluate import colour_and_direction, colours_and_centroids
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")


def seed(s=0):
    return torch.Generator().manual_seed(s)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=7)


def test_every_factor_th_frame_is_the_given_one(pipe):
    assert frames_after(4, 3) == 10 and list(keyframes_every(torch.zeros(1, 4, 3, 2, 2), 3)) == [0, 3, 6]
    z = pipe("a cat", num_frames=3, num_inference_steps=2, height=32, width=32, generator=seed(),
             output_type="latent").frames
    out = pipe.interpolate(z, "a cat", factor=3, num_inference_steps=2, generator=seed(1), output_type="latent").frames
    assert out.shape == (1, 4, 7, 4, 4)
    assert torch.equal(out[:, :, 0::3], z)  # held at strength 1: the last step sets them
    pixels = pipe.decode_latents(z)
    from_pixels = pipe.interpolate(pixels, "a cat", factor=2, num_inference_steps=2, generator=seed(1)).frames
    assert from_pixels.shape == (1, 5, 32, 32, 3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(factor=1), "factor must be an integer >= 2"), (dict(factor=2.0), "factor must be an integer"),
    (dict(num_frames=5), "interpolate: num_frames cannot be passed here"),
])
def test_bad_interpolations_are_refused(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe.interpolate(np.zeros((3, 32, 32, 3), np.float32), "a cat", **kwargs)
    with pytest.raises(ValueError, match="in-between frames need at least two"):
        pipe.interpolate(np.zeros((1, 32, 32, 3), np.float32), "a cat")


def test_toy_new_frames_lie_between_their_neighbours():
    """The even frames of a generated toy video (a red circle moving right) interpolated by 2: the direction is the
    source's, each new frame's shape lies between its neighbours' along the motion, and each new frame is close to
    the generated odd frame it stands for; switched off (strength 0) the video is another one."""
    toy = TextToVideoPipeline.from_pretrained("toy")
    toy.scheduler = from_name("dpm++", toy.scheduler.config)
    toy.set_progress_bar_config(disable=True)
    caption = "a red circle moving right"
    source = torch.as_tensor(toy(caption, num_frames=8, num_inference_steps=8, generator=seed(1)).frames)[0]
    error = {}
    for strength in (1.0, 0.0):
        video = torch.as_tensor(toy.interpolate(source[None, 0::2], caption, factor=2, num_inference_steps=8,
                                                generator=seed(2), keyframe_strength=strength).frames[0])
        error[strength] = max((video[f] - source[f]).abs().mean().item() for f in (1, 3, 5))
        if strength == 1.0:
            assert colour_and_direction(video)[1] == colour_and_direction(source)[1] == "right"
            xs = [c[0] for _, c in colours_and_centroids(video)]  # moving right: the centroids' x
            # 1 px of slack: a centroid moves that much when a soft edge changes with the shape standing still
            assert all(min(xs[f - 1], xs[f + 1]) - 1 <= xs[f] <= max(xs[f - 1], xs[f + 1]) + 1 for f in (1, 3, 5))
    # measured: the largest mean |new - odd frame| 0.019 held, 0.10 not held (the frames' own change is ~0.03)
    assert error[1.0] < 0.05 < error[0.0]
