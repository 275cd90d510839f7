"""The capstone's exercises: the world's new attribute (slow shapes) and the judge's reader for it."""

from __future__ import annotations

import torch

from ..toy import data, speed
from ..toy.evaluate import centroids, foreground, travel_along
from .core import Exercise, call, compare, register


def make_slow(labels):
    """The same clips, slow: a new dict of labels (the one given left as it was) with each travel (the world's
    30..34 pixels) mapped linearly onto 14..16 and each start (13..19) onto 23..26."""
    slow = dict(labels)
    slow["travel"] = 14 + (labels["travel"] - 30) / 4 * 2
    slow["start"] = 23 + (labels["start"] - 13) / 6 * 3
    return slow


def check_make_slow(fn):
    labels = data.sample_labels(12, seed=16, combos=data.ALL_COMBOS)
    before = {k: v.clone() for k, v in labels.items()}
    got = call(fn, labels)
    want = speed.slow(before)
    if got is None:
        compare(None, want["travel"], "make_slow(labels)")
    compare(labels["travel"], before["travel"], "the labels given (their travel)", mistakes={
        "after make_slow changed them in place (build a new dict: the caller's clips must stay as they were)":
            want["travel"]})
    compare(got["travel"], want["travel"], "make_slow(labels)['travel']", mistakes={
        "with the travel halved (travel / 2) instead of mapped from 30..34 onto 14..16": before["travel"] / 2,
        "with the travel set to 15 for every clip (the labels' own variety is lost)": torch.full((12,), 15.0),
        "with 30..34 mapped onto 14..18 (a range of 4, not 2)": 14 + (before["travel"] - 30),
    })
    compare(got["start"], want["start"], "make_slow(labels)['start']", mistakes={
        "with the start left as it was (13..19 px from the edge it leaves): the short path then stays near that edge, "
        "not about the middle": before["start"],
        "with the start moved by the travel saved (start + 17): the path then ends where the world's would, "
        "near the far edge": before["start"] + (before["travel"] - want["travel"]),
    })
    for key in labels:
        if key not in ("travel", "start"):
            compare(got[key].float(), want[key].float(), f"make_slow(labels)[{key!r}]")


def shape_travel(video):
    """video (F, H, W, 3) in [0, 1] -> how far the shape travels along its motion, in pixels (a float): the
    larger component, in absolute value, of its centroid's shift (the judge's foreground mask, ``centroids``)
    from the first frame that shows a shape to the last; 0.0 when fewer than two frames show one."""
    mask, _ = foreground(video)
    shown = [f for f in range(len(mask)) if mask[f].any()]
    if len(shown) < 2:
        return 0.0
    path = centroids(mask)
    shift = path[shown[-1]] - path[shown[0]]
    return float(shift.abs().max())


def check_shape_travel(fn):
    world, _ = data.make_clips(4, seed=17, combos=data.ALL_COMBOS)
    slow, _ = speed.make_clips(4, seed=17)
    videos = torch.cat([world, slow])
    videos[2, 0] = videos[2, 0, 0, 0]  # a first frame without the shape: the path starts at the first one showing it
    want = torch.tensor([travel_along(v) for v in videos])
    got = torch.tensor([float(call(fn, v)) for v in videos])

    def shifts():
        out = []
        for v in videos:
            mask, _ = foreground(v)
            shown = [f for f in range(len(mask)) if mask[f].any()]
            path = centroids(mask)
            out.append(path[shown[-1]] - path[shown[0]])
        return torch.stack(out)  # (8, 2): dx, dy

    s = shifts()
    signed = torch.where(s[:, 0].abs() >= s[:, 1].abs(), s[:, 0], s[:, 1])
    compare(got, want, "shape_travel(video) for 4 world clips and 4 slow ones", mistakes={
        "with the signed shift (a shape moving left or up travels a negative distance): take the absolute value":
            signed,
        "with the horizontal shift alone (dx): a shape moving up or down travels along y": s[:, 0].abs(),
        "per frame (the shift divided by the frames' steps): the travel is the whole path, first frame to last":
            want / 7,
    })


register(Exercise("16.slow", "slow shapes for the world", "make_slow", check_make_slow, make_slow,
                  hint="new = dict(labels); new['travel'] = 14 + (travel - 30) / 4 * 2; start likewise onto 23..26"))
register(Exercise("16.travel", "the judge's speed reader", "shape_travel", check_shape_travel, shape_travel,
                  hint="mask, _ = foreground(video); path = centroids(mask); the shift from the first frame showing "
                       "the shape to the last; its larger |component|"))
