"""Video tensors in diffusers' own layout, channels first ((F, 3, H, W), (B, F, 3, H, W)), read as well as channels
last, told apart by which axis has 3 entries, and refused where the shape reads both ways; video-to-video tells
4-channel latents from 4 channels-first frames by their values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2vlab import VideoToVideoPipeline
from t2vlab.inputs import frames_last, video_input
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")


def clip(shape=(2, 5, 16, 24, 3)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def test_channels_first_videos_are_moved_channels_last_and_channels_last_ones_left_alone():
    last = clip()  # (B, F, H, W, 3)
    first = last.permute(0, 1, 4, 2, 3)  # diffusers' (B, F, 3, H, W)
    assert torch.equal(frames_last(first), last)
    assert torch.equal(frames_last(first[0]), last[0])  # one video (F, 3, H, W)
    one = last[0]
    assert frames_last(last) is last and frames_last(one) is one
    assert np.array_equal(frames_last(first.numpy()), last.numpy())  # NumPy arrays alike
    listed = frames_last([first[0], first[1]])  # a list of (F, 3, H, W), as diffusers takes too
    assert all(torch.equal(a, b) for a, b in zip(listed, last))
    assert np.array_equal(video_input(first), video_input(last))


@pytest.mark.parametrize("shape", [(2, 5, 3, 16, 3), (5, 3, 16, 3)])
def test_a_shape_that_reads_both_ways_is_refused_naming_it(shape):
    with pytest.raises(ValueError, match=rf"video: shape \({', '.join(map(str, shape))}\) reads both as channels last"):
        video_input(torch.rand(shape))


def test_neither_layout_is_left_to_the_readers_own_messages():
    rgba = torch.rand(2, 5, 16, 24, 4)
    assert frames_last(rgba) is rgba
    with pytest.raises(ValueError, match="RGBA pixels"):
        video_input(rgba)
    with pytest.raises(ValueError, match="grey-scale"):
        video_input(torch.rand(2, 5, 16, 24, 1))


@pytest.fixture(scope="module")
def v2v():
    pipe = VideoToVideoPipeline.from_pipe(tiny_pipe(seed=10))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def restyle(v2v, video, **kw):
    kw = {"output_type": "pt", **kw}
    return v2v("a red circle", video=video, strength=0.6, num_inference_steps=4,
               generator=torch.Generator().manual_seed(0), **kw).frames


def test_video_to_video_takes_diffusers_channels_first_tensors(v2v):
    last = clip((1, 3, 32, 32, 3))
    assert torch.equal(restyle(v2v, last.permute(0, 1, 4, 2, 3)), restyle(v2v, last))


def test_four_channels_first_frames_are_told_from_latents_by_their_values(v2v):
    pixels = clip((1, 4, 3, 32, 32))  # in [0, 1]: 4 frames channels first, or latents of 3 frames?
    with pytest.raises(ValueError, match=r"video: a tensor of shape \(1, 4, 3, 32, 32\) with every value in \[0, 1\] "
                                         r"reads two ways"):
        restyle(v2v, pixels)
    latents = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))  # a VAE's: values below 0
    assert restyle(v2v, latents, output_type="latent").shape == (1, 4, 3, 4, 4)
    assert restyle(v2v, pixels.permute(0, 1, 3, 4, 2)).shape == (1, 4, 32, 32, 3)  # channels last: pixels
