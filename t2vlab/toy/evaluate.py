"""Does a video show what its caption says? Read colour and motion direction off the frames.

    shape:     the pixels that differ from the background (the median colour of the frames' border) by more
               than THRESHOLD in some channel: the shape and the brighter part of its trail;
    colour:    the mean colour of those pixels, seen relative to the background and scaled so that its strongest
               channel is 1 (``relative_colour``: the trail's fading and the brightness jitter scale a colour, they do
               not change it), matched to the palette colour (the world's four and purple, the colour a LoRA teaches
               in notebook 14) seen the same way, if one is within COLOUR_TOLERANCE; an ambiguous colour, between
               two palette colours (orange, a dull yellow), reads as None, not as the nearest;
    direction: the sign of the larger component of those pixels' centroid shift from the first frame showing them
               to the last (``direction_of``): lenient, it does not ask how far or how straight the shape moved.
    speed:     (the capstone's attribute, ``read_speed``) how far that centroid travels along the motion, from the
               first frame showing the shape to the last (``travel_along``): under SLOW_TRAVEL pixels reads "slow".

``evaluate(pipe)`` generates a video for each caption and reports accuracy per attribute, on the
combinations seen in training and on those held out.
"""

from __future__ import annotations

import argparse
import math

import torch

from ..atomic import atomic_file
from ..pipeline import TextToVideoPipeline
from ..schedulers import from_name
from ..weights import toy_checkpoint
from .data import ALL_COMBOS, HELD_OUT, PALETTE, PURPLE_HELD_OUT, caption

THRESHOLD = 0.25  # a pixel belongs to the shape when some channel differs from the background by this much
# How far (Euclidean, in relative_colour's space) a colour may be from a palette colour and still read as it.
# Measured on the toy's dark backgrounds (grey 0 to 0.12; notebook 00 prints these): the world's own clips come
# within 0.1 of their colour, and so do the shipped toy's 144 evaluation videos, while the palette's colours are
# 0.67 or more apart. Orange (1.0, 0.55, 0.05) is 0.35-0.40 from yellow and 0.42-0.49 from red, a dull yellow
# (0.6, 0.6, 0.2) 0.23-0.25 from yellow: 0.2, twice the farthest right reading, refuses both.
COLOUR_TOLERANCE = 0.2

# the line between slow shapes and the world's, in pixels of travel along the motion (``travel_along``).
# A world shape (travel 30-34 px, toy.data) measures 25-33 as drawn (96 clips of the 48 combinations: where the shape
# starts, its trail is partly out of the frame, which moves the first frame's centroid forward), 25-34 through the
# toy's VAE, and 25-33 as the shipped toy generates the 48 plain captions (and the 48 slow ones, whose word it
# ignores); a slow one (travel 14-16, toy.speed) 14-16 as drawn and 13.6-16.1 through the VAE. 21 lies about midway:
# 5 px above the slow clips' largest reading, 4 below the world's smallest; the capstone (notebook 16) measures it
# again.
SLOW_TRAVEL = 21


def foreground(video):
    """video (F, H, W, 3) in [0, 1] -> (mask (F, H, W) bool, background colour (3,)).

    The background is the median colour of the frames' one-pixel border."""
    video = torch.as_tensor(video, dtype=torch.float32)
    border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1).reshape(-1, 3)
    background = border.median(0).values
    return (video - background).abs().amax(-1) > THRESHOLD, background


def relative_colour(rgb, background):
    """A colour as it stands out from the background: (rgb - background) / its largest channel, (..., 3).
    A shape drawn at a fraction a of its colour over the background (the trail, a dimmer tint) gives
    background + a (colour - background): the same relative colour."""
    diff = torch.as_tensor(rgb, dtype=torch.float32) - torch.as_tensor(background, dtype=torch.float32)
    return diff / diff.amax(-1, keepdim=True).clamp_min(1e-6)


def colour_distances(rgb, background=(0.0, 0.0, 0.0)):
    """{palette name: distance from ``rgb`` (3,) to that colour}, both seen relative to ``background``."""
    palette = torch.tensor(list(PALETTE.values()))
    d = (relative_colour(palette, background) - relative_colour(rgb, background)).norm(dim=-1)
    return dict(zip(PALETTE, d.tolist()))


def nearest_colour(rgb, background=(0.0, 0.0, 0.0)):
    """The palette's colour (purple included) that ``rgb`` (3,) reads as over ``background``: the nearest in
    ``relative_colour``'s space if it is within COLOUR_TOLERANCE, else None (ambiguous, or not brighter than the
    background in any channel)."""
    if (torch.as_tensor(rgb, dtype=torch.float32) - torch.as_tensor(background, dtype=torch.float32)).max() <= 0:
        return None
    name, distance = min(colour_distances(rgb, background).items(), key=lambda kv: kv[1])
    return name if distance <= COLOUR_TOLERANCE else None


def centroids(mask):
    """mask (F, H, W) bool -> (F, 2): each frame's centroid (x, y) in pixels (column, row), NaN where empty."""
    w = mask.float()
    ys, xs = torch.meshgrid(torch.arange(mask.shape[1]), torch.arange(mask.shape[2]), indexing="ij")
    return torch.stack([(xs * w).sum((1, 2)), (ys * w).sum((1, 2))], -1) / w.sum((1, 2))[:, None]


def direction_of(shift):
    """A shift (dx, dy) in pixels (y grows downwards) -> "left", "right", "up" or "down": the sign of its larger
    component (ties go to the horizontal)."""
    dx, dy = (float(v) for v in shift)
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def colour_and_direction(video):
    """(colour name or None, direction name or None) as seen in one video (F, H, W, 3)."""
    video = torch.as_tensor(video, dtype=torch.float32)
    mask, background = foreground(video)
    if not mask.any():
        return None, None
    colour = nearest_colour(video[mask].mean(0), background)
    shown = [f for f in range(len(video)) if mask[f].any()]
    if len(shown) < 2:
        return colour, None
    path = centroids(mask)
    return colour, direction_of(path[shown[-1]] - path[shown[0]])


def travel_along(video):
    """How far the shape moves along its motion in pixels: the larger component (in absolute value) of its
    centroid's shift from the first frame showing it to the last, the same shift ``colour_and_direction``
    reads the direction from (0 if fewer than two frames show a shape)."""
    mask, _ = foreground(video)
    shown = [f for f in range(len(mask)) if mask[f].any()]
    if len(shown) < 2:
        return 0.0
    path = centroids(mask)
    return float((path[shown[-1]] - path[shown[0]]).abs().max())


def read_speed(video):
    """"slow" when the shape travels less than ``SLOW_TRAVEL`` pixels along its motion, else "usual"."""
    return "slow" if travel_along(video) < SLOW_TRAVEL else "usual"


def colours_and_centroids(video):
    """Per frame of a video (F, H, W, 3): (colour name or None, centroid (x, y) in pixels or None) of the
    pixels that differ from the background (the shape and its trail). The colour is None where no shape is
    seen, and where one is seen whose colour is ambiguous (see ``nearest_colour``)."""
    video = torch.as_tensor(video, dtype=torch.float32)
    mask, background = foreground(video)
    out = []
    for frame, m, c in zip(video, mask, centroids(mask).tolist()):
        if not m.any():
            out.append((None, None))
            continue
        out.append((nearest_colour(frame[m].mean(0), background), tuple(c)))
    return out


def long_video_report(video, colour, direction, window=8):
    """How well a long video (F, H, W, 3) keeps to its caption, frame by frame and window by window.

    colour     fraction of the frames showing a shape whose colour reads as ``colour`` (constancy; a frame whose
               colour is ambiguous counts against it)
    direction  fraction of the consecutive windows of ``window`` frames (the toy's clip length) whose
               motion reads as ``direction`` (``colour_and_direction`` on each window)
    max_jump   the largest move of the shape's centroid between two consecutive frames, in pixels
               (a training clip moves it about 32 px over 7 steps, ~4.6 px a frame; a jump of 20+ px
               is the shape starting over somewhere else)
    shown      fraction of frames in which a shape is seen at all
    """
    frames = colours_and_centroids(video)
    seen = [c for c, centre in frames if centre is not None]  # the frames showing a shape, ambiguous colours too
    windows = [colour_and_direction(video[s:s + window])[1] for s in range(0, len(frames) - window + 1, window)]
    jumps = [math.dist(a, b) for (_, a), (_, b) in zip(frames, frames[1:]) if a is not None and b is not None]
    return {"colour": sum(c == colour for c in seen) / max(len(seen), 1),
            "direction": sum(d == direction for d in windows) / max(len(windows), 1),
            "max_jump": max(jumps, default=0.0), "shown": len(seen) / len(frames), "windows": windows}


def score(videos, combos):
    """Per-video results and accuracies for videos (N, F, H, W, 3) made for ``combos`` (colour, shape, direction)."""
    rows = []
    for video, (colour, shape, direction) in zip(videos, combos):
        seen_colour, seen_direction = colour_and_direction(video)
        held_out = (colour, shape, direction) in HELD_OUT + PURPLE_HELD_OUT
        rows.append({"caption": caption(colour, shape, direction), "held_out": held_out,
                     "colour": seen_colour, "direction": seen_direction,
                     "colour_ok": seen_colour == colour, "direction_ok": seen_direction == direction})
    return rows, summarize(rows)


def summarize(rows):
    out = {}
    for split, keep in (("all", lambda r: True), ("seen", lambda r: not r["held_out"]),
                        ("held_out", lambda r: r["held_out"])):
        part = [r for r in rows if keep(r)]
        out[split] = {"n": len(part),
                      "colour": sum(r["colour_ok"] for r in part) / max(len(part), 1),
                      "direction": sum(r["direction_ok"] for r in part) / max(len(part), 1)}
    return out


def evaluate(pipe, seeds=(0,), steps=25, guidance_scale=None, combos=ALL_COMBOS, batch=48, scheduler="dpm++",
             **kwargs):
    """Generate one video per caption and seed with DPM-Solver++ (``steps`` steps) and score them.

    ``guidance_scale=None`` keeps the pipeline's default. ``scheduler``: another sampler by name ("ddim",
    "lcm", ...: ``schedulers.from_name``), or None to keep the pipeline's own (a distilled student's LCM with
    its settings). Returns (rows, summary, videos)."""
    if scheduler is not None:
        pipe.scheduler = from_name(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    all_combos, videos = [], []
    for seed in seeds:
        for i in range(0, len(combos), batch):
            part = list(combos[i:i + batch])
            g = torch.Generator().manual_seed(seed)
            out = pipe([caption(*c) for c in part], num_frames=8, num_inference_steps=steps, generator=g, **kwargs)
            videos.append(torch.as_tensor(out.frames))
            all_combos += part
    videos = torch.cat(videos)
    rows, summary = score(videos, all_combos)
    return rows, summary, videos


def save_grid(videos, rows, path, frames=8):
    """A PNG of generated videos, one row each (its frames left to right), titled with the caption and
    what the evaluator read: the picture docs/toy-model.md shows. Drawn on its own Agg canvas, not through
    pyplot (a library call must not change the backend of the notebook it runs in); written whole or not at all."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: only the grid needs it
    from matplotlib.figure import Figure  # (same reason)

    fig = Figure(figsize=(1.1 * frames, 1.35 * len(rows)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), frames, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.04, hspace=0.35)
    for r, (video, row) in enumerate(zip(videos, rows)):
        for f in range(frames):
            axes[r, f].imshow(torch.as_tensor(video[f]).clamp(0, 1).numpy())
            axes[r, f].set_axis_off()
        verdict = "ok" if row["colour_ok"] and row["direction_ok"] else f"read as {row['colour']} / {row['direction']}"
        held = ", held out" if row["held_out"] else ""
        axes[r, 0].set_title(f"{row['caption']}{held}: {verdict}", loc="left", fontsize=8)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=72)  # tmp keeps the target's extension, which picks the format
    return path


def report(summary) -> str:
    return "\n".join(f"{split:9s} n={s['n']:3d}  colour {s['colour']:6.1%}  direction {s['direction']:6.1%}"
                     for split, s in summary.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Score a checkpoint on the toy world's 48 captions.")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the shipped toy checkpoint)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", default=None, help="also write a PNG of the first seed's videos here")
    args = parser.parse_args()
    pipe = TextToVideoPipeline.from_pretrained(args.model or toy_checkpoint(), device=args.device)
    rows, summary, videos = evaluate(pipe, seeds=range(args.seeds), steps=args.steps, guidance_scale=args.guidance)
    print(report(summary))
    for r in rows:
        if not (r["colour_ok"] and r["direction_ok"]):
            print(f"  missed: {r['caption']!r} read as {r['colour']} / {r['direction']}")
    if args.grid:
        first = list(enumerate(rows[:len(ALL_COMBOS)]))
        pick = [i for i, r in first if r["held_out"]] + [i for i, r in first if not r["held_out"]][::7]
        print("wrote", save_grid(videos[pick], [rows[i] for i in pick], args.grid))
