"""Notebook 00's exercises: how the toy world's judge reads a video (t2vlab.toy.evaluate)."""

from __future__ import annotations

import torch

from ..toy import data
from ..toy.evaluate import THRESHOLD, centroids, foreground
from .core import Exercise, ExerciseMistake, call, compare, register


def _clips():
    """Four clips of the toy world (F, 64, 64, 3) plus one with a bright background, where "differs from the
    background" and "is bright" part ways."""
    clips, _ = data.make_clips(4, seed=21, combos=data.ALL_COMBOS)
    light = data.sample_labels(1, seed=22)
    light["background"] = torch.tensor([0.5])  # a mid-grey background: no clip of the world has one
    return torch.cat([clips, data.render(light)])


# --------------------------------------------------------------------- 00.foreground: which pixels are the shape
def shape_mask(video, threshold=0.25):
    """Which pixels show the shape (or its trail): those whose colour differs from the background by more than
    ``threshold`` in some channel, the background being the median colour of the frames' one-pixel border.

    video (F, H, W, 3) in [0, 1] -> mask (F, H, W) bool."""
    border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], dim=1)  # (F, 2W + 2H, 3)
    background = border.reshape(-1, 3).median(dim=0).values                                # (3,): one per channel
    return (video - background).abs().amax(dim=-1) > threshold                             # the largest channel


def check_shape_mask(fn):
    for i, video in enumerate(_clips()):
        want, background = foreground(video)
        diff = video - background
        border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1).reshape(-1, 3)
        got = call(fn, video, THRESHOLD)
        if torch.is_tensor(got) and got.dtype != torch.bool:
            raise ExerciseMistake(f"shape_mask should return a bool mask (a comparison like `> threshold`), "
                                  f"got {got.dtype}")
        # booleans: compare checks them exactly (as 0/1)
        compare(got, want, f"shape_mask of clip {i}" + (" (mid-grey background)" if i == 4 else ""), mistakes={
            "comparing with black (brightness > threshold) instead of with the background": video.amax(-1) > THRESHOLD,
            "with the mean of the channels' differences where their largest belongs":
                diff.abs().mean(-1) > THRESHOLD,
            "with the signed difference (only pixels brighter than the background)": diff.amax(-1) > THRESHOLD,
            "with the border's mean colour as the background, not its median":
                (video - border.mean(0)).abs().amax(-1) > THRESHOLD,
        })


register(Exercise("00.foreground", "the judge's mask: which pixels are the shape", "shape_mask", check_shape_mask,
                  shape_mask, hint="background = median of the border pixels, per channel; then "
                                   "|video - background|.amax(-1) > threshold"))


# --------------------------------------------------------------- 00.centroids: where the shape is, frame by frame
def centre_of_mass(mask):
    """Each frame's centroid of the shape's pixels, in pixels: x the column, y the row (y grows downwards).

    mask (F, H, W) bool -> (F, 2) float, (x, y) per frame."""
    F_, H, W = mask.shape
    w = mask.float()
    ys = torch.arange(H, dtype=torch.float32)[:, None]    # (H, 1): the row of every pixel
    xs = torch.arange(W, dtype=torch.float32)[None, :]    # (1, W): the column
    count = w.sum(dim=(1, 2))                             # (F,): pixels in each frame's shape
    return torch.stack([(w * xs).sum(dim=(1, 2)) / count, (w * ys).sum(dim=(1, 2)) / count], dim=-1)


def check_centroids(fn):
    masks = torch.stack([foreground(v)[0] for v in _clips()[:4]])  # (4, F, H, W): the judge's masks of 4 clips
    for i, mask in enumerate(masks):
        want = centroids(mask)
        H, W = mask.shape[1:]
        w = mask.float()
        # sums of up to 4096 float32 pixel coordinates below 64: rounding under 1e-4 px, inside compare's rtol 1e-4
        compare(call(fn, mask), want, f"centre_of_mass of clip {i}", mistakes={
            "with (y, x), row first: the judge wants (x, y), x the column": want.flip(-1),
            "without dividing by the number of the shape's pixels (a sum, not a mean)":
                want * w.sum((1, 2))[:, None],
            "dividing by all the frame's pixels (H * W), not by the shape's": want * w.sum((1, 2))[:, None] / (H * W),
        })


register(Exercise("00.centroids", "the judge's path: the shape's centroid in each frame", "centre_of_mass",
                  check_centroids, centre_of_mass,
                  hint="x = sum(mask * column) / sum(mask), y = sum(mask * row) / sum(mask), per frame"))
