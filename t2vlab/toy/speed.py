"""A new attribute for the toy world, speed, taught to the trained toy model with a LoRA: the course's
capstone (notebooks/16_capstone.ipynb).

    python -m t2vlab.toy.speed DATA_FOLDER              # write the clips, then train as TRAINING_COMMAND says
    python -m t2vlab.toy.speed --check [LORA_FOLDER]    # the capstone's evaluation of a LoRA (default: the
                                                        # shipped one), written to LORA_FOLDER/evaluation.json

The world's shapes travel 30 to 34 pixels over their 8 frames. A **slow** shape is drawn from the same
labels with the travel mapped onto ``SLOW_TRAVEL_RANGE`` (14 to 16 pixels: half the speed) and the start moved so
that its shorter path lies about the middle of the frame; nothing else changes (colour, shape, radius, the
coordinate across the motion, background, tint; the trail still covers the last 5 frame steps of the
path, so it is shorter too: the clips are still a pure function of the seed). Its caption puts the speed
word in the place of "a": "slow red circle moving left". The toy's text encoder has 8 positions and learnt
every word at its own place; "a slow red circle moving left" would shift the colour, shape and direction
words by one (notebook 16 counts what that does to the shipped model's colour and direction), while "slow
red circle moving left" keeps them where they were.

Why speed and not size. The capstone was first written for size (big shapes, radius 18 to 20 instead of
8 to 11). Big shapes drawn read the right colour in 100% of 48 clips, but after the toy VAE's round trip
only 68.8% (the world's shapes: 100%): the toy VAE, trained on the world's small shapes, does not keep a
big shape's colour, and a LoRA on the UNet cannot fix what the decoder cannot show; the big LoRA trained
on them read "big" in 100% of the 48 combinations and the colour in 31.2%. Speed changes only where a
shape of the usual size and colour is drawn in each frame, which the toy VAE reproduces: the attribute
lives in the UNet (its temporal layers above all), where a LoRA can teach it.

The evaluator reads speed as the shape's travel (``evaluate.travel_along``: how far the centroid of the
shape and its trail moves along the motion's axis, from the first frame showing it to the last) and
``evaluate.read_speed`` calls a travel under ``evaluate.SLOW_TRAVEL`` "slow" (its comment states the
measurements behind the line).

The LoRA's data, like the purple LoRA's (``toy.purple``): half slow clips, from every combination but
``SLOW_HELD_OUT`` (kept out, to see whether the new word composes), half clips of the original world with
their plain captions, so that the model keeps the usual speed when no speed word is given. The LoRA
trained on them ships with the package: ``slow_lora()`` is its folder, with the command, the log and the
time of the run (training.json) and ``python -m t2vlab.toy.speed --check``'s measurement of it over the 48
combinations (evaluation.json, ``recorded_evaluation()``: notebook 16 prints it where it measures fewer).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..schedulers import from_name
from . import data
from .evaluate import read_speed, score

SPEED_WORD = "slow"
SLOW_TRAVEL_RANGE = (14.0, 16.0)  # the world's travels 30..34 mapped linearly onto this range
SLOW_START = (23.0, 26.0)  # the world's starts 13..19 (from the edge the shape leaves) mapped onto this range
# slow combinations the LoRA's data leaves out: one per shape, colour and direction (each word is still shown)
SLOW_HELD_OUT = (("red", "square", "up"), ("green", "triangle", "left"), ("blue", "circle", "down"),
                 ("yellow", "triangle", "right"))
SLOW_COMBOS = data.ALL_COMBOS  # every (colour, shape, direction) can be slow
LORA_DATA = (("slow", 160), ("original", 160))  # clips of each kind
TRAINING_COMMAND = ("python -m t2vlab finetune --data DATA_FOLDER --out OUT --model toy --frames 8 --size 64 "
                    "--lora-rank 8 --train both --steps 400 --batch-size 8 --lr 3e-3 --caption-dropout 0.1 "
                    "--checkpoint-every 100 --seed 0")


def caption(colour, shape, direction, speed=None) -> str:
    """The world's caption, or with ``speed="slow"`` the speed word in the place of "a": "slow red circle moving
    left"."""
    if speed is None:
        return data.caption(colour, shape, direction)
    if speed != SPEED_WORD:
        raise ValueError(f"speed: {speed!r}; the world knows {SPEED_WORD!r} (or None for the usual speed)")
    return f"{speed} {colour} {shape} moving {direction}"


def slow(labels):
    """The same clips, slow: each travel in the world's 30..34 pixels mapped to 14..16, and each start (13..19
    pixels from the edge the shape leaves) to 23..26, so that the short path lies about the frame's middle.
    A new dict; the labels given are left as they were."""
    def remap(x, low, high, to):
        return to[0] + (x - low) / (high - low) * (to[1] - to[0])

    return {**labels, "travel": remap(labels["travel"], 30, 34, SLOW_TRAVEL_RANGE),
            "start": remap(labels["start"], 13, 19, SLOW_START)}


def make_clips(n, seed=0, combos=SLOW_COMBOS, speed=SPEED_WORD):
    """n clips and their captions: slow shapes (``speed="slow"``) or the world's own (``speed=None``)."""
    labels = data.sample_labels(n, seed, combos)
    if speed is not None:
        caption(*combos[0], speed=speed)  # checks the word
        labels = slow(labels)
    names = [tuple(c.split()[1:3]) + (c.split()[-1],) for c in data.captions(labels)]
    return data.render(labels), [caption(*c, speed=speed) for c in names]


def lora_combos():
    """The slow combinations in the LoRA's data (44 of 48)."""
    return tuple(c for c in SLOW_COMBOS if c not in SLOW_HELD_OUT)


def lora_clips(seed=0, per_kind=None):
    """(clips (n, 8, 64, 64, 3), captions): slow clips and clips of the original world, alternating
    (``per_kind`` of each; default ``LORA_DATA``'s counts)."""
    n_slow, n_original = (per_kind, per_kind) if per_kind else (LORA_DATA[0][1], LORA_DATA[1][1])
    slow_clips, slow_captions = make_clips(n_slow, seed=seed, combos=lora_combos())
    original, original_captions = make_clips(n_original, seed=seed + 1, combos=data.TRAIN_COMBOS, speed=None)
    clips = np.empty((len(slow_clips) + len(original), *slow_clips.shape[1:]), dtype=np.float32)
    clips[0::2], clips[1::2] = slow_clips.numpy(), original.numpy()
    captions = [c for pair in zip(slow_captions, original_captions) for c in pair]
    return clips, captions


def write_lora_data(folder, seed=0, per_kind=None):
    """Write the clips as folders of PNG frames with same-named captions (what ``python -m t2vlab finetune`` reads)."""
    return data.write_clip_folders(folder, *lora_clips(seed, per_kind))


def slow_lora() -> Path:
    """The folder of the shipped "slow" LoRA (``pipe.load_lora_weights(slow_lora())``), with its command and log."""
    return Path(str(resources.files("t2vlab") / "data" / "toy_slow_lora"))


def finetune_args(data_folder, out, steps=None) -> list[str]:
    """``TRAINING_COMMAND``'s arguments for ``finetune.main``, with the data and output folders filled in (and
    ``steps``, if given, in place of the recipe's): notebook 16 runs the recipe as the shipped LoRA was made."""
    args = TRAINING_COMMAND.split("finetune ", 1)[1].split()
    values = {"--data": str(data_folder), "--out": str(out), **({"--steps": str(steps)} if steps else {})}
    return [values.get(args[i - 1], a) if i else a for i, a in enumerate(args)] + ["--quiet"]


def recorded_evaluation(folder=None) -> dict:
    """The measurement ``python -m t2vlab.toy.speed --check`` recorded beside a LoRA (default: the shipped one):
    {"slow": summary, "plain": summary, "plain_without_lora": summary, "steps", "seed", "torch", "date"}, each
    summary as ``evaluate_speed`` returns it, over the 48 combinations."""
    return json.loads((Path(folder or slow_lora()) / "evaluation.json").read_text(encoding="utf-8"))


def evaluate_speed(pipe, combos, speed=SPEED_WORD, seed=0, steps=25, batch=24):
    """Generate one video per combination, captioned with ``speed`` (None: the world's plain caption), and read
    it. Returns (rows, summary, videos): each row has the caption, what was read (colour, direction, speed) and
    whether each is right; the summary the share right of each attribute over all, seen and held-out combinations."""
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    videos = []
    for i in range(0, len(combos), batch):
        part = combos[i:i + batch]
        g = torch.Generator().manual_seed(seed)
        videos.append(torch.as_tensor(pipe([caption(*c, speed=speed) for c in part], num_frames=8,
                                           num_inference_steps=steps, generator=g).frames))
    videos = torch.cat(videos)
    rows, _ = score(videos, combos)
    want = speed or "usual"
    held = set(SLOW_HELD_OUT) if speed else set()
    for row, video, combo in zip(rows, videos, combos):
        row["caption"], row["held_out"] = caption(*combo, speed=speed), combo in held
        row["speed"] = read_speed(video)
        row["speed_ok"] = row["speed"] == want
    summary = {}
    for split, keep in (("all", lambda r: True), ("seen", lambda r: not r["held_out"]),
                        ("held_out", lambda r: r["held_out"])):
        part = [r for r in rows if keep(r)]
        summary[split] = {"n": len(part), **{k: sum(r[f"{k}_ok"] for r in part) / max(len(part), 1)
                                             for k in ("colour", "direction", "speed")}}
    return rows, summary, videos


def report(summary) -> str:
    return "\n".join(f"{split:9s} n={s['n']:3d}  colour {s['colour']:6.1%}  direction {s['direction']:6.1%}  "
                     f"speed {s['speed']:6.1%}" for split, s in summary.items())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:  # python -m t2vlab.toy.speed --check [LORA_FOLDER]
        import datetime

        from ..atomic import atomic_file
        from ..pipeline import TextToVideoPipeline

        torch.set_num_threads(1)
        folder = Path(sys.argv[2]) if len(sys.argv) > 2 else slow_lora()
        pipe = TextToVideoPipeline.from_pretrained("toy")
        record = {"steps": 25, "seed": 0, "torch": torch.__version__, "date": datetime.date.today().isoformat()}
        record["plain_without_lora"] = evaluate_speed(pipe, list(SLOW_COMBOS), None)[1]
        pipe.load_lora_weights(folder, adapter_name="slow")
        record["slow"] = evaluate_speed(pipe, list(SLOW_COMBOS), SPEED_WORD)[1]
        record["plain"] = evaluate_speed(pipe, list(SLOW_COMBOS), None)[1]
        for key, what in (("slow", "slow captions, with the LoRA"), ("plain", "plain captions, with the LoRA"),
                          ("plain_without_lora", "plain captions, the toy without it")):
            print(f"{what}:\n{report(record[key])}")
        with atomic_file(folder / "evaluation.json") as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print("wrote", folder / "evaluation.json")
    else:
        print("wrote", write_lora_data(sys.argv[1] if len(sys.argv) > 1 else "slow-data"))
        print("train with:", TRAINING_COMMAND)
