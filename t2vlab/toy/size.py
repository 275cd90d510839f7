"""A new attribute for the toy world, size, taught to the trained toy model with a LoRA (the groundwork of the
course's capstone, whose notebook is not written yet).

    python -m t2vlab.toy.size DATA_FOLDER              # write the clips, then train as TRAINING_COMMAND says
    python -m t2vlab.toy.size --check [LORA_FOLDER]    # the capstone's evaluation of a LoRA

The world's shapes have a radius of 8 to 11 pixels. A **big** shape is drawn from the same labels with
the radius mapped onto 18 to 20 pixels (``big``), and centred across its motion so that it stays in the
frame; nothing else changes (colour, path, trail, background: the clips are still a pure function of
the seed). Its caption puts the size word in the place of "a": "big red circle moving left". The toy's
text encoder has 8 positions and learnt every word at its own place; "a big red circle moving left"
would shift the colour, shape and direction words by one, and the shipped model then reads 1 of 12
captions right (measured in the capstone), while "big red circle moving left" keeps them where they were.

The evaluator reads size as the shape's extent *across* its motion (``evaluate.extent_across``): the trail
lengthens a shape along its path, never across it. A big shape measures 30 to 40 pixels across, a shape
of the world 14 to 22 (and up to about 27 in the toy's blurrier generated videos); ``evaluate.BIG_EXTENT``
is the line between them.

The LoRA's data, like the purple LoRA's (``toy.purple``): half big clips, from every combination but
``BIG_HELD_OUT`` (kept out, to see whether the new word composes), half clips of the original world with
their plain captions, so that the model keeps drawing the usual size when no size word is given. The
toy VAE already draws big shapes (a convolutional decoder is not bound to a size; it was a colour it did
not know in notebook 14), so no VAE stage is needed. The LoRA trained on them ships with the package:
``big_lora()`` is its folder, with the command, the log and the time of the run.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..schedulers import from_name
from . import data
from .evaluate import read_size, score

SIZE_WORD = "big"
BIG_RADIUS = (18.0, 20.0)  # the world's radii 8..11 mapped linearly onto this range
BIG_ACROSS = (29.0, 35.0)  # the coordinate across the motion, kept near the centre: the shape stays in the frame
# big combinations the LoRA's data leaves out: one per shape, colour and direction (each word is still shown)
BIG_HELD_OUT = (("red", "square", "up"), ("green", "triangle", "left"), ("blue", "circle", "down"),
                ("yellow", "triangle", "right"))
BIG_COMBOS = data.ALL_COMBOS  # every (colour, shape, direction) can be big
LORA_DATA = (("big", 160), ("original", 160))  # clips of each kind
TRAINING_COMMAND = ("python -m t2vlab finetune --data DATA_FOLDER --out OUT --model toy --frames 8 --size 64 "
                    "--lora-rank 8 --train both --steps 400 --batch-size 8 --lr 2e-3 --caption-dropout 0.1 "
                    "--checkpoint-every 100 --seed 0")


def caption(colour, shape, direction, size=None) -> str:
    """The world's caption, or with ``size="big"`` the size word in the place of "a": "big red circle moving left"."""
    if size is None:
        return data.caption(colour, shape, direction)
    if size != SIZE_WORD:
        raise ValueError(f"size: {size!r}; the world knows {SIZE_WORD!r} (or None for the usual size)")
    return f"{size} {colour} {shape} moving {direction}"


def big(labels):
    """The same clips with big shapes: each radius r in the world's 8..11 mapped to 18..20, and the coordinate
    across the motion (18..46) mapped to 29..35. A new dict; the labels given are left as they were."""
    def remap(x, low, high, to):
        return to[0] + (x - low) / (high - low) * (to[1] - to[0])

    return {**labels, "radius": remap(labels["radius"], 8, 11, BIG_RADIUS),
            "across": remap(labels["across"], 18, 46, BIG_ACROSS)}


def make_clips(n, seed=0, combos=BIG_COMBOS, size=SIZE_WORD):
    """n clips and their captions: big shapes (``size="big"``) or the world's own (``size=None``)."""
    labels = data.sample_labels(n, seed, combos)
    if size is not None:
        caption(*combos[0], size=size)  # checks the word
        labels = big(labels)
    names = [tuple(c.split()[1:3]) + (c.split()[-1],) for c in data.captions(labels)]
    return data.render(labels), [caption(*c, size=size) for c in names]


def lora_combos():
    """The big combinations in the LoRA's data (44 of 48)."""
    return tuple(c for c in BIG_COMBOS if c not in BIG_HELD_OUT)


def lora_clips(seed=0, per_kind=None):
    """(clips (n, 8, 64, 64, 3), captions): big clips and clips of the original world, alternating
    (``per_kind`` of each; default ``LORA_DATA``'s counts)."""
    n_big, n_original = (per_kind, per_kind) if per_kind else (LORA_DATA[0][1], LORA_DATA[1][1])
    big_clips, big_captions = make_clips(n_big, seed=seed, combos=lora_combos())
    original, original_captions = make_clips(n_original, seed=seed + 1, combos=data.TRAIN_COMBOS, size=None)
    clips = np.empty((len(big_clips) + len(original), *big_clips.shape[1:]), dtype=np.float32)
    clips[0::2], clips[1::2] = big_clips.numpy(), original.numpy()
    captions = [c for pair in zip(big_captions, original_captions) for c in pair]
    return clips, captions


def write_lora_data(folder, seed=0, per_kind=None):
    """Write the clips as folders of PNG frames with same-named captions (what ``python -m t2vlab finetune`` reads)."""
    return data.write_clip_folders(folder, *lora_clips(seed, per_kind))


def big_lora() -> Path:
    """The folder of the shipped "big" LoRA (``pipe.load_lora_weights(big_lora())``), with its command and log."""
    return Path(str(resources.files("t2vlab") / "data" / "toy_big_lora"))


def evaluate_size(pipe, combos, size=SIZE_WORD, seed=0, steps=25, batch=24):
    """Generate one video per combination, captioned with ``size`` (None: the world's plain caption), and read
    it. Returns (rows, summary): each row has the caption, what was read (colour, direction, size) and whether
    each is right; the summary the share right of each attribute over all, seen and held-out combinations."""
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    videos = []
    for i in range(0, len(combos), batch):
        part = combos[i:i + batch]
        g = torch.Generator().manual_seed(seed)
        videos.append(torch.as_tensor(pipe([caption(*c, size=size) for c in part], num_frames=8,
                                           num_inference_steps=steps, generator=g).frames))
    videos = torch.cat(videos)
    rows, _ = score(videos, combos)
    want = size or "usual"
    held = set(BIG_HELD_OUT) if size else set()
    for row, video, combo in zip(rows, videos, combos):
        row["caption"], row["held_out"] = caption(*combo, size=size), combo in held
        row["size"] = read_size(video)
        row["size_ok"] = row["size"] == want
    summary = {}
    for split, keep in (("all", lambda r: True), ("seen", lambda r: not r["held_out"]),
                        ("held_out", lambda r: r["held_out"])):
        part = [r for r in rows if keep(r)]
        summary[split] = {"n": len(part), **{k: sum(r[f"{k}_ok"] for r in part) / max(len(part), 1)
                                             for k in ("colour", "direction", "size")}}
    return rows, summary, videos


def report(summary) -> str:
    return "\n".join(f"{split:9s} n={s['n']:3d}  colour {s['colour']:6.1%}  direction {s['direction']:6.1%}  "
                     f"size {s['size']:6.1%}" for split, s in summary.items())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:  # python -m t2vlab.toy.size --check [LORA_FOLDER]
        from ..pipeline import TextToVideoPipeline

        torch.set_num_threads(1)
        pipe = TextToVideoPipeline.from_pretrained("toy")
        pipe.load_lora_weights(sys.argv[2] if len(sys.argv) > 2 else big_lora(), adapter_name="big")
        for size in (SIZE_WORD, None):
            print(f"captions {'with' if size else 'without'} the size word, with the LoRA:")
            print(report(evaluate_size(pipe, list(BIG_COMBOS), size)[1]))
    else:
        print("wrote", write_lora_data(sys.argv[1] if len(sys.argv) > 1 else "big-data"))
        print("train with:", TRAINING_COMMAND)
