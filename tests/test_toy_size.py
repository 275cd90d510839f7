"""The toy world's new attribute, size (the capstone, notebook 16): big shapes drawn from the same labels, their
captions, the evaluator's size reader (the extent across the motion), and the shipped "big" LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.toy import data, size
from t2vlab.toy.evaluate import BIG_EXTENT, extent_across, read_size


def test_big_shapes_keep_every_other_label_and_stay_in_the_frame():
    labels = data.sample_labels(64, seed=2, combos=data.ALL_COMBOS)
    before = {k: v.clone() for k, v in labels.items()}
    big = size.big(labels)
    assert all(torch.equal(labels[k], before[k]) for k in labels)  # the labels given are left alone
    assert big["radius"].min() >= size.BIG_RADIUS[0] and big["radius"].max() <= size.BIG_RADIUS[1]
    assert big["across"].min() >= size.BIG_ACROSS[0] and big["across"].max() <= size.BIG_ACROSS[1]
    assert all(torch.equal(big[k], labels[k]) for k in labels if k not in ("radius", "across"))
    # across the motion the shape stays inside the 64 pixels
    assert (big["across"] - big["radius"]).min() >= 0 and (big["across"] + big["radius"]).max() <= data.SIZE


def test_big_clips_and_their_captions_are_a_pure_function_of_the_seed():
    a, captions = size.make_clips(4, seed=7)
    b, again = size.make_clips(4, seed=7)
    assert torch.equal(a, b) and captions == again
    assert all(c.startswith("big ") and len(c.split()) == 5 for c in captions)  # "big" in the place of "a"
    plain, plain_captions = size.make_clips(4, seed=7, size=None)
    world, labels = data.make_clips(4, seed=7, combos=data.ALL_COMBOS)
    assert torch.equal(plain, world) and plain_captions == data.captions(labels)
    assert [c.split()[1:] for c in captions] == [c.split()[1:] for c in plain_captions]  # same colour, shape, path
    with pytest.raises(ValueError, match="size"):
        size.caption("red", "circle", "left", size="huge")


def test_the_reader_tells_big_from_usual_on_every_combination():
    world, _ = data.make_clips(96, seed=3, combos=data.ALL_COMBOS)
    big, _ = size.make_clips(96, seed=3)
    world_extents = [extent_across(c) for c in world]
    big_extents = [extent_across(c) for c in big]
    assert max(world_extents) < BIG_EXTENT <= min(big_extents), (max(world_extents), min(big_extents))
    assert [read_size(c) for c in world] == ["usual"] * 96 and [read_size(c) for c in big] == ["big"] * 96


def test_the_extent_read_is_the_one_across_the_motion_whatever_the_direction():
    labels = data.sample_labels(16, seed=4, combos=data.ALL_COMBOS)
    clips = data.render(labels)
    for clip, direction in zip(clips, labels["direction"].tolist()):
        mask = (clip - clip[0, 0, 0]).abs().amax(-1) > 0.25  # (F, H, W): the shape and its trail
        horizontal = list(data.DIRECTIONS)[direction] in ("left", "right")
        across = [int((m.any(1) if horizontal else m.any(0)).sum()) for m in mask]  # rows, or columns, touched
        along = [int((m.any(0) if horizontal else m.any(1)).sum()) for m in mask]
        assert extent_across(clip) == float(torch.tensor(across, dtype=torch.float32).median())
        assert min(along) > max(across)  # the trail makes the shape longer along its path than across it
    assert extent_across(torch.zeros(8, 64, 64, 3)) == 0.0 and read_size(torch.zeros(8, 64, 64, 3)) == "usual"


def test_the_toy_vae_shows_big_shapes_big():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    world, _ = data.make_clips(24, seed=5, combos=data.ALL_COMBOS)
    big, _ = size.make_clips(24, seed=5)
    with torch.no_grad():
        world_rt = pipe.decode_latents(pipe.encode_video(world, sample=False))
        big_rt = pipe.decode_latents(pipe.encode_video(big, sample=False))
    assert [read_size(v) for v in world_rt] == ["usual"] * 24 and [read_size(v) for v in big_rt] == ["big"] * 24


def test_lora_data_leaves_the_held_out_big_combinations_out(tmp_path):
    clips, captions = size.lora_clips(per_kind=30)
    assert len(clips) == 60 and sum(c.startswith("big ") for c in captions) == 30
    assert not {size.caption(*c, size="big") for c in size.BIG_HELD_OUT} & set(captions)
    folder = size.write_lora_data(tmp_path, per_kind=1)
    assert sorted(p.name for p in folder.iterdir()) == ["clip0000", "clip0000.txt", "clip0001", "clip0001.txt"]
    assert (folder / "clip0000.txt").read_text().startswith("big ")


def test_the_shipped_big_lora_makes_big_shapes_and_unloads_exactly():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.set_progress_bar_config(disable=True)
    combos = list(size.BIG_HELD_OUT)  # the four combinations its data never showed

    def run(text_size):
        return pipe([size.caption(*c, size=text_size) for c in combos], num_frames=8, num_inference_steps=10,
                    generator=torch.Generator().manual_seed(0)).frames

    plain = run("big")
    assert [read_size(v) for v in plain] == ["usual"] * 4  # the shipped model ignores the new word
    pipe.load_lora_weights(size.big_lora(), adapter_name="big")
    assert [read_size(v) for v in run("big")] == ["big"] * 4
    assert [read_size(v) for v in run(None)] == ["usual"] * 4  # without the word, the usual size
    pipe.unload_lora_weights()
    assert np.array_equal(run("big"), plain)
