"""A third try at issue 29's continuation aim, on CPU: teach the toy, with a LoRA, what a longer video of its world
looks like, and see whether it learns it.

The toy only ever saw 8-frame clips that start near the edge a shape leaves and cross the frame once, so a chunk
that starts where another ended has nothing it was shown to do (docs/benchmarks.md, "Directing a video", (b)). A
real model is trained on windows cut anywhere from longer videos. This script draws that for the toy's world: a
16-frame path of the world's length (start and travel as ``toy.data.sample_labels`` draws them, so half the
world's speed), cut into one 8-frame window at a random offset 0..8, captioned with the capstone's speed word
("slow red circle moving left", ``toy.speed``), half the data the world's own clips with their plain captions (as
the capstone's LoRA's data is made). Three chunks of continuation (16 frames) at that speed stay in the frame.

    python -m benchmarks.continuation_windows --data DIR          # write the clips (320), then train:
    python -m t2vlab finetune --data DIR --out LORA --model toy --frames 8 --size 64 --lora-rank 8 --train both \\
        --steps 1200 --batch-size 8 --lr 3e-3 --caption-dropout 0.1 --checkpoint-every 400 --seed 0 --quiet
    python -m benchmarks.continuation_windows --check LORA [--steps 25]   # one 8-frame video per caption, read
    python -m benchmarks.directing_cpu --part continuation --slow --slow-lora LORA   # the aim itself

``--check`` prints what the evaluator reads on the 48 slow captions (colour, direction, speed) and the median
travel along the motion (a window moves about 15 px); the same for the capstone's shipped LoRA beside it.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from t2vlab.toy import data, speed

LONG = 16  # frames of the path a window is cut from
OFFSET_SEED = 12345  # the windows' offsets are drawn from seed + this (the figures in docs/benchmarks.md were made so)


def windows(n, seed=0, combos=data.ALL_COMBOS):
    """n 8-frame windows of 16-frame paths and their slow captions: (clips (n, 8, 64, 64, 3), captions)."""
    labels = data.sample_labels(n, seed, combos)
    g = torch.Generator().manual_seed(seed + OFFSET_SEED)
    offset = torch.randint(0, LONG - data.FRAMES + 1, (n,), generator=g).float()  # where each window starts
    travel = labels["travel"]  # the whole path's, over LONG frames
    labels = {**labels, "start": labels["start"] + travel * offset / (LONG - 1),
              "travel": travel * (data.FRAMES - 1) / (LONG - 1)}
    names = [tuple(c.split()[1:3]) + (c.split()[-1],) for c in data.captions(labels)]
    return data.render(labels), [speed.caption(*c, speed=speed.SPEED_WORD) for c in names]


def write_data(folder, per_kind=160, seed=0):
    """Windows and the world's own clips, alternating, as ``t2vlab finetune`` reads them."""
    slow, slow_captions = windows(per_kind, seed)
    world, world_captions = speed.make_clips(per_kind, seed=seed + 1, combos=data.TRAIN_COMBOS, speed=None)
    clips = np.empty((2 * per_kind, *slow.shape[1:]), dtype=np.float32)
    clips[0::2], clips[1::2] = slow.numpy(), world.numpy()
    return data.write_clip_folders(folder, clips, [c for p in zip(slow_captions, world_captions) for c in p])


def check(lora, steps):
    from t2vlab import TextToVideoPipeline
    from t2vlab.toy.evaluate import travel_along

    for name, folder in (("this LoRA", lora), ("the capstone's slow LoRA", speed.slow_lora())):
        pipe = TextToVideoPipeline.from_pretrained("toy")
        pipe.load_lora_weights(folder)
        _, summary, videos = speed.evaluate_speed(pipe, list(data.ALL_COMBOS), speed.SPEED_WORD, steps=steps)
        print(f"{name} ({folder}), {steps} steps:\n{speed.report(summary)}\n"
              f"travel along the motion, median: {statistics.median(travel_along(v) for v in videos):.1f} px")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="write the LoRA's clips into this folder")
    ap.add_argument("--check", metavar="LORA", help="read one video per slow caption, made with this LoRA")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data:
        print("wrote", write_data(args.data))
    if args.check:
        check(args.check, args.steps)
    if not (args.data or args.check):
        ap.error("give --data DIR or --check LORA")


if __name__ == "__main__":
    main()
