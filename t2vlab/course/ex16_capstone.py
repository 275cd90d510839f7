"""The capstone's exercises: the world's new attribute (big shapes) and the judge's reader for it."""

from __future__ import annotations

import torch

from ..toy import data, size
from ..toy.evaluate import extent_across, foreground
from .core import Exercise, call, compare, register


def make_big(labels):
    """The same clips with big shapes: a new dict of labels (the one given left as it was) with each radius r
    (the world's 8..11) mapped linearly onto 18..20 and the coordinate across the motion (18..46) onto 29..35."""
    big = dict(labels)
    big["radius"] = 18 + (labels["radius"] - 8) / 3 * 2
    big["across"] = 29 + (labels["across"] - 18) / 28 * 6
    return big


def check_make_big(fn):
    labels = data.sample_labels(12, seed=18, combos=data.ALL_COMBOS)
    before = {k: v.clone() for k, v in labels.items()}
    got = call(fn, labels)
    want = size.big(before)
    if got is None:
        compare(None, want["radius"], "make_big(labels)")
    compare(labels["radius"], before["radius"], "the labels given (their radius)", mistakes={
        "after make_big changed them in place (build a new dict: the caller's clips must stay as they were)":
            want["radius"]})
    compare(got["radius"], want["radius"], "make_big(labels)['radius']", mistakes={
        "with the radius scaled (r * 18 / 8) instead of mapped from 8..11 onto 18..20": before["radius"] * 18 / 8,
        "with the radius set to 19 for every clip (the labels' own variety is lost)": torch.full((12,), 19.0),
        "with 8..11 mapped onto 18..21 (a range of 3, not 2)": 18 + (before["radius"] - 8),
    })
    compare(got["across"], want["across"], "make_big(labels)['across']", mistakes={
        "with the coordinate across the motion left as it was (a big shape near the edge leaves the frame)":
            before["across"],
    })
    for key in labels:
        if key not in ("radius", "across"):
            compare(got[key].float(), want[key].float(), f"make_big(labels)[{key!r}]")


def shape_extent(video):
    """video (F, H, W, 3) in [0, 1] -> the shape's extent across its motion in pixels: in each frame that shows a
    shape, the smaller of (rows touched, columns touched) by the judge's foreground mask; the median over frames."""
    mask, _ = foreground(video)
    extents = [min(int(m.any(dim=1).sum()), int(m.any(dim=0).sum())) for m in mask if m.any()]
    return float(torch.tensor(extents, dtype=torch.float32).median()) if extents else 0.0


def check_shape_extent(fn):
    world, _ = data.make_clips(4, seed=19, combos=data.ALL_COMBOS)
    big, _ = size.make_clips(4, seed=19)
    videos = torch.cat([world, big])
    masks = [foreground(v)[0] for v in videos]
    want = torch.tensor([extent_across(v) for v in videos])
    got = torch.tensor([float(call(fn, v)) for v in videos])

    def per_frame(pick, reduce=torch.median):
        return torch.tensor([float(reduce(torch.tensor([pick(f) for f in m if f.any()], dtype=torch.float32)))
                             for m in masks])

    compare(got, want, "shape_extent(video) for 4 world clips and 4 big ones", mistakes={
        "with the larger of the two extents: that is the length along the motion, trail included": per_frame(
            lambda f: max(int(f.any(1).sum()), int(f.any(0).sum()))),
        "counting the shape's pixels (its area, trail included) instead of its extent": per_frame(
            lambda f: int(f.sum())),
        "with the mean over the frames instead of the median": per_frame(
            lambda f: min(int(f.any(1).sum()), int(f.any(0).sum())), torch.mean),
    })


register(Exercise("16.big", "big shapes for the world", "make_big", check_make_big, make_big,
                  hint="new = dict(labels); new['radius'] = 18 + (r - 8) / 3 * 2; across likewise onto 29..35"))
register(Exercise("16.extent", "the judge's size reader", "shape_extent", check_shape_extent, shape_extent,
                  hint="mask, _ = foreground(video); per frame min(mask.any(1).sum(), mask.any(0).sum()); the median"))
