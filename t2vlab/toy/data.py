"""A synthetic captioned video world: coloured shapes moving over a dark background.

Every clip is 8 frames of 64x64 pixels: one circle, square or triangle, coloured red, green, blue
or yellow, moving left, right, up or down by about half the frame, captioned
"a {colour} {shape} moving {direction}". Behind the shape fades a trail of the path it has just
covered (like a long-exposure streak), so one frame shows which way the shape moves (see ``render``
and docs/toy-model.md: without it, the world looks the same played backwards, and the toy model
could not learn the sign of the motion from the caption). Clips are drawn on the fly (no
downloads) and are a pure function of the seed. Six of the 48 combinations are held out of
training, so the evaluator can ask whether the model composes words it has only seen in other
combinations. A fifth colour, purple (``NEW_COLOURS``), is drawn only for teaching the trained model
a new word with a LoRA (``PURPLE_COMBOS``; ``PURPLE_HELD_OUT`` stay out of the LoRA's data).

    clips, labels = make_clips(16, seed=0)     # (16, 8, 64, 64, 3) floats in [0, 1], label rows
    captions(labels)                           # ["a red circle moving left", ...]
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

COLOURS = {"red": (0.90, 0.12, 0.10), "green": (0.12, 0.80, 0.20),
           "blue": (0.15, 0.25, 0.95), "yellow": (0.95, 0.85, 0.10)}
# a colour the shipped model never saw, taught afterwards by a LoRA (notebooks/14_lora_finetuning.ipynb);
# its index comes after the four, so every clip of the original world is drawn exactly as before
NEW_COLOURS = {"purple": (0.70, 0.15, 0.85)}
PALETTE = {**COLOURS, **NEW_COLOURS}  # every colour the world draws and the evaluator reads
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # image y grows downwards
FRAMES, SIZE = 8, 64
TRAIL = 5.0  # the trail behind a moving shape covers its last 5 frame steps of path (about 23 px; see render)
GHOSTS, TRAIL_START = 10, 0.85  # drawn as 10 copies, fading linearly from 0.85 of the colour

# (colour, shape, direction) never shown in training; every single word still is, in other combinations
HELD_OUT = (("red", "circle", "left"), ("green", "square", "up"), ("blue", "triangle", "right"),
            ("yellow", "circle", "down"), ("red", "triangle", "down"), ("blue", "square", "left"))
ALL_COMBOS = tuple(itertools.product(COLOURS, SHAPES, DIRECTIONS))
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELD_OUT)
PURPLE_COMBOS = tuple(itertools.product(NEW_COLOURS, SHAPES, DIRECTIONS))
# purple combinations the LoRA's data leaves out: one per shape, one per direction but "down" and "up"
PURPLE_HELD_OUT = (("purple", "circle", "up"), ("purple", "square", "right"), ("purple", "triangle", "left"))


def caption(colour, shape, direction) -> str:
    return f"a {colour} {shape} moving {direction}"


def all_captions(split="all") -> list[str]:
    """The 48 captions ("all"), the 42 of training ("train") or the 6 held out ("held_out")."""
    combos = {"all": ALL_COMBOS, "train": TRAIN_COMBOS, "held_out": HELD_OUT}[split]
    return [caption(*c) for c in combos]


def sample_labels(n, seed=0, combos=TRAIN_COMBOS):
    """n clip descriptions, drawn uniformly from ``combos``: a dict of tensors (one entry per clip)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(combos), (n,), generator=g)
    u = torch.rand(n, 6, generator=g)
    chosen = [combos[i] for i in idx.tolist()]
    return {
        "colour": torch.tensor([list(PALETTE).index(c[0]) for c in chosen]),
        "shape": torch.tensor([SHAPES.index(c[1]) for c in chosen]),
        "direction": torch.tensor([list(DIRECTIONS).index(c[2]) for c in chosen]),
        "start": 16 + 6 * (u[:, 0] - 0.5),        # along the motion, measured from the edge it leaves
        "travel": 32 + 4 * (u[:, 1] - 0.5),       # pixels covered from the first frame to the last
        "across": 18 + 28 * u[:, 2],              # the other coordinate, fixed during the clip
        "radius": 8 + 3 * u[:, 3],
        "background": 0.12 * u[:, 4],             # a plain dark grey
        "tint": 0.1 * (u[:, 5] - 0.5),            # small brightness jitter of the shape's colour
    }


def captions(labels) -> list[str]:
    return [caption(list(PALETTE)[c], SHAPES[s], list(DIRECTIONS)[d])
            for c, s, d in zip(labels["colour"].tolist(), labels["shape"].tolist(), labels["direction"].tolist())]


def centres(labels, frames=FRAMES):
    """The shape's centre (x, y) in every frame: (n, frames, 2), moving linearly."""
    device = labels["direction"].device
    d = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32, device=device)[labels["direction"]]  # (n, 2)
    t = torch.linspace(0, 1, frames, device=device)[None, :, None]
    along = labels["start"][:, None, None] + labels["travel"][:, None, None] * t  # distance from the left edge
    pos_along = torch.where(d.sum(1, keepdim=True)[:, None] > 0, along, SIZE - along)  # right/down: grows
    horizontal = (d[:, 0] != 0)[:, None, None]
    across = labels["across"][:, None, None].expand_as(pos_along)
    return torch.where(horizontal, torch.cat([pos_along, across], -1), torch.cat([across, pos_along], -1))


def shape_masks(labels, c, size=SIZE):
    """Which pixels each clip's shape covers when its centre is at c (n, F, 2): (n, F, size, size) bool."""
    coords = torch.arange(size, dtype=torch.float32, device=c.device) + 0.5
    dx = coords[None, None, None, :] - c[..., 0, None, None]  # (n, F, 1, W)
    dy = coords[None, None, :, None] - c[..., 1, None, None]  # (n, F, H, 1)
    r = labels["radius"][:, None, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) / 1.8)  # apex up, base below the centre
    shape = labels["shape"][:, None, None, None]
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def render(labels, frames=FRAMES, size=SIZE, device=None, trail=TRAIL):
    """Draw the clips: (n, frames, size, size, 3) float32 in [0, 1].

    Behind the shape fades a trail over the last ``trail`` frame steps of its path (``GHOSTS`` fainter
    copies at the places it has just left), like a long-exposure streak: so that a single frame shows
    which way the shape moves, not only where it is, and a clip played backwards (the trail ahead of
    the shape) never occurs. ``trail=0`` draws the bare shape, the world before the trail."""
    labels = {k: v.to(device) for k, v in labels.items()}
    c = centres(labels, frames)  # (n, F, 2)
    alpha = shape_masks(labels, c, size).float()
    if trail > 0:
        step = (c[:, -1] - c[:, 0])[:, None] / (frames - 1)  # (n, 1, 2): the path per frame
        for k in range(1, GHOSTS + 1):
            ghost = shape_masks(labels, c - step * (trail * k / GHOSTS), size)
            alpha = torch.maximum(alpha, ghost * (TRAIL_START * (1 - k / (GHOSTS + 1))))
    if "rgb" in labels:  # any colour, drawn by random_colours (toy.decoder: a decoder for every colour)
        colour = labels["rgb"]
    else:
        colour = torch.tensor(list(PALETTE.values()), device=device)[labels["colour"]]
    colour = (colour + labels["tint"][:, None]).clamp(0, 1)[:, None, None, None, :]  # (n, 1, 1, 1, 3)
    background = labels["background"][:, None, None, None, None]
    return background + alpha[..., None] * (colour - background)


def random_colours(n, seed=0):
    """n colours (n, 3) of random hue, saturation 0.55-0.95 and value 0.8-0.95: the whole colour wheel at
    the palette's brightness (every one has a channel of 0.8 or more, like the palette's)."""
    hue, sat, val = torch.rand(3, n, generator=torch.Generator().manual_seed(seed))
    sat, val = 0.55 + 0.4 * sat, 0.8 + 0.15 * val
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0])) % 6  # HSV to RGB, one formula per channel
    return val[:, None] * (1 - sat[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1)))


def make_clips(n, seed=0, combos=TRAIN_COMBOS, device=None):
    """n clips and their labels, a pure function of ``seed``."""
    labels = sample_labels(n, seed, combos)
    return render(labels, device=device), labels


def write_clip_folders(folder, clips, captions):
    """Clips (n, F, H, W, 3) in [0, 1] as what ``t2vlab finetune`` reads: a folder of PNG frames per clip (lossless:
    GIF and MP4 would shift the colours) beside a same-named caption file. Returns ``folder``."""
    from PIL import Image  # imported here: only writing the frames needs it

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (clip, text) in enumerate(zip(clips, captions)):
        clip_dir = folder / f"clip{i:04d}"
        clip_dir.mkdir(exist_ok=True)
        for j, frame in enumerate((np.asarray(clip) * 255).round().astype(np.uint8)):
            Image.fromarray(frame).save(clip_dir / f"{j:02d}.png")
        (folder / f"clip{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder
