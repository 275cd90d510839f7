"""Teach the trained toy model a colour it has never seen, purple, with a LoRA (notebooks/14_lora_finetuning.ipynb).

    python -m t2vlab.toy.purple DATA_FOLDER            # write the clips, then train as TRAINING_COMMAND says

The data is what ``python -m t2vlab finetune`` reads: folders of frames with same-named .txt captions.
Half the clips are purple shapes, from 9 of the 12 purple combinations (``data.PURPLE_HELD_OUT`` stay
out, to see whether the new word composes with shapes and directions it was not shown with); the other
half are clips of the original world, so that what the model knew is rehearsed while the new word is
learnt. The LoRA trained on them ships with the package: ``purple_lora()`` is its folder. It is shown and
checked through the toy VAE extended to purple (``purple_vae()``, ``with_purple_vae``): the toy's own VAE
returns purple as red.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..schedulers import from_name
from ..vae import AutoencoderKL
from . import data
from .evaluate import evaluate, report

LORA_DATA = (("purple", 160), ("original", 160))  # clips of each kind
TRAINING_COMMAND = ("python -m t2vlab finetune --data DATA_FOLDER --out OUT --model toy --frames 8 --size 64 "
                    "--lora-rank 8 --train both --steps 400 --batch-size 8 --lr 2e-3 --caption-dropout 0.1 "
                    "--checkpoint-every 100 --seed 0")


def lora_combos():
    """The purple combinations in the LoRA's data (9 of 12)."""
    return tuple(c for c in data.PURPLE_COMBOS if c not in data.PURPLE_HELD_OUT)


def lora_clips(seed=0, per_kind=None):
    """(clips (n, 8, 64, 64, 3), captions): purple clips and clips of the original world, alternating
    (``per_kind`` of each; default ``LORA_DATA``'s counts)."""
    purple, labels_p = data.make_clips(per_kind or LORA_DATA[0][1], seed=seed, combos=lora_combos())
    original, labels_o = data.make_clips(per_kind or LORA_DATA[1][1], seed=seed + 1, combos=data.TRAIN_COMBOS)
    clips = np.empty((len(purple) + len(original), *purple.shape[1:]), dtype=np.float32)
    clips[0::2], clips[1::2] = purple.numpy(), original.numpy()
    captions = [c for pair in zip(data.captions(labels_p), data.captions(labels_o)) for c in pair]
    return clips, captions


def write_lora_data(folder, seed=0, per_kind=None):
    """Write the clips as folders of PNG frames (lossless: GIF and MP4 would shift the colours) with captions."""
    return data.write_clip_folders(folder, *lora_clips(seed, per_kind))


def purple_vae() -> Path:
    """The folder of the toy VAE with its decoder extended to purple (``t2vlab.toy.decoder``; the encoder, and so
    the latents the UNet learnt, are the toy's own), with its training record."""
    return Path(str(resources.files("t2vlab") / "data" / "toy_purple_vae"))


def with_purple_vae(pipe):
    """The toy ``pipe`` with the purple-extended VAE in place of its own (the toy's VAE returns purple as red,
    so no UNet LoRA could show purple through it): how the purple LoRA is shown and checked."""
    vae = AutoencoderKL.from_pretrained(purple_vae(), torch_dtype=pipe.vae.dtype)
    pipe.vae = vae.to(pipe.vae.device)
    return pipe


def purple_lora() -> Path:
    """The folder of the shipped purple LoRA (``pipe.load_lora_weights(purple_lora())``), with its training log."""
    return Path(str(resources.files("t2vlab") / "data" / "toy_purple_lora"))


def check_lora(pipe, lora=None, seeds=(0,), steps=25, original=data.ALL_COMBOS):
    """The issue's three checks for a purple LoRA on the toy ``pipe`` (left without it afterwards); give the
    pipe the purple-extended VAE first (``with_purple_vae``).

    Returns {"purple": summary of the 12 purple captions with the LoRA, "original": summary of ``original``
    captions with the LoRA, "unload_exact": whether the frames after unloading equal those before loading}.
    """
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)  # what evaluate uses: the probes must match
    probe = dict(num_frames=8, num_inference_steps=5, generator=None)
    before = pipe("a red circle moving left", **{**probe, "generator": _g()}).frames
    pipe.load_lora_weights(lora or purple_lora(), adapter_name="purple")
    try:
        _, purple, _ = evaluate(pipe, seeds=seeds, steps=steps, combos=data.PURPLE_COMBOS)
        _, kept, _ = evaluate(pipe, seeds=seeds, steps=steps, combos=original)
    finally:
        pipe.unload_lora_weights()
    after = pipe("a red circle moving left", **{**probe, "generator": _g()}).frames
    return {"purple": purple, "original": kept, "unload_exact": bool(np.array_equal(before, after))}


def _g():
    return torch.Generator().manual_seed(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:  # python -m t2vlab.toy.purple --check [LORA_FOLDER] [SEEDS]
        from ..pipeline import TextToVideoPipeline

        pipe = with_purple_vae(TextToVideoPipeline.from_pretrained("toy"))
        lora = sys.argv[2] if len(sys.argv) > 2 else None
        result = check_lora(pipe, lora, seeds=range(int(sys.argv[3]) if len(sys.argv) > 3 else 1))
        print("purple captions, with the LoRA:\n" + report(result["purple"]))
        print("original captions, with the LoRA:\n" + report(result["original"]))
        print("unloading gives the original frames exactly:", result["unload_exact"])
    else:
        print("wrote", write_lora_data(sys.argv[1] if len(sys.argv) > 1 else "purple-data"))
        print("train with:", TRAINING_COMMAND)
