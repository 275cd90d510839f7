"""The toy world's new attribute, speed (the capstone, notebook 16): slow shapes drawn from the same labels, their
captions, the evaluator's speed reader (the travel along the motion), and the shipped "slow" LoRA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.toy import data, speed
from t2vlab.toy.evaluate import SLOW_TRAVEL, colour_and_direction, read_speed, travel_along


def test_slow_shapes_keep_every_other_label_and_stay_in_the_frame():
    labels = data.sample_labels(64, seed=2, combos=data.ALL_COMBOS)
    before = {k: v.clone() for k, v in labels.items()}
    slow = speed.slow(labels)
    assert all(torch.equal(labels[k], before[k]) for k in labels)  # the labels given are left alone
    assert slow["travel"].min() >= speed.SLOW_TRAVEL_RANGE[0] and slow["travel"].max() <= speed.SLOW_TRAVEL_RANGE[1]
    assert slow["start"].min() >= speed.SLOW_START[0] and slow["start"].max() <= speed.SLOW_START[1]
    assert all(torch.equal(slow[k], labels[k]) for k in labels if k not in ("travel", "start"))
    # the whole path, shape included, stays inside the 64 pixels, about the middle
    end = slow["start"] + slow["travel"]
    assert (slow["start"] - slow["radius"]).min() >= 0 and (end + slow["radius"]).max() <= data.SIZE
    assert ((slow["start"] + end) / 2 - data.SIZE / 2).abs().max() < 3


def test_slow_clips_and_their_captions_are_a_pure_function_of_the_seed():
    a, captions = speed.make_clips(4, seed=7)
    b, again = speed.make_clips(4, seed=7)
    assert torch.equal(a, b) and captions == again
    assert all(c.startswith("slow ") and len(c.split()) == 5 for c in captions)  # "slow" in the place of "a"
    plain, plain_captions = speed.make_clips(4, seed=7, speed=None)
    world, labels = data.make_clips(4, seed=7, combos=data.ALL_COMBOS)
    assert torch.equal(plain, world) and plain_captions == data.captions(labels)
    assert [c.split()[1:] for c in captions] == [c.split()[1:] for c in plain_captions]  # same colour, shape, direction
    with pytest.raises(ValueError, match="speed"):
        speed.caption("red", "circle", "left", speed="fast")


def test_the_reader_tells_slow_from_usual_on_every_combination_and_keeps_colour_and_direction():
    world, labels = data.make_clips(96, seed=3, combos=data.ALL_COMBOS)
    slow, _ = speed.make_clips(96, seed=3)
    world_travel, slow_travel = [travel_along(c) for c in world], [travel_along(c) for c in slow]
    assert max(slow_travel) < SLOW_TRAVEL <= min(world_travel), (max(slow_travel), min(world_travel))
    assert [read_speed(c) for c in world] == ["usual"] * 96 and [read_speed(c) for c in slow] == ["slow"] * 96
    want = [(list(data.PALETTE)[c], list(data.DIRECTIONS)[d])
            for c, d in zip(labels["colour"].tolist(), labels["direction"].tolist())]
    assert [colour_and_direction(c) for c in slow] == want  # the judge's colour and direction read slow clips too


def test_the_travel_read_is_along_the_motion_and_from_the_first_frame_showing_the_shape():
    clips, _ = speed.make_clips(4, seed=4, combos=[("red", "circle", d) for d in data.DIRECTIONS])
    travels = [travel_along(c) for c in clips]
    assert all(14 <= t <= 16.5 for t in travels), travels  # left, right, up and down alike: a positive distance
    late = clips[0].clone()
    late[0] = late[0, 0, 0]  # no shape in the first frame: the path starts at the second
    assert travel_along(late) < travels[0]
    assert travel_along(torch.zeros(8, 64, 64, 3)) == 0.0 and read_speed(torch.zeros(8, 64, 64, 3)) == "slow"


def test_the_toy_vae_shows_slow_shapes_slow_with_their_colour():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    world, _ = data.make_clips(24, seed=5, combos=data.ALL_COMBOS)
    slow, _ = speed.make_clips(24, seed=5)
    labels = data.sample_labels(24, 5, data.ALL_COMBOS)
    with torch.no_grad():
        world_rt = pipe.decode_latents(pipe.encode_video(world, sample=False))
        slow_rt = pipe.decode_latents(pipe.encode_video(slow, sample=False))
    assert [read_speed(v) for v in world_rt] == ["usual"] * 24 and [read_speed(v) for v in slow_rt] == ["slow"] * 24
    colours = [colour_and_direction(v)[0] for v in slow_rt]
    assert colours == [list(data.PALETTE)[c] for c in labels["colour"].tolist()]


def test_lora_data_leaves_the_held_out_slow_combinations_out(tmp_path):
    clips, captions = speed.lora_clips(per_kind=30)
    assert len(clips) == 60 and sum(c.startswith("slow ") for c in captions) == 30
    assert not {speed.caption(*c, speed="slow") for c in speed.SLOW_HELD_OUT} & set(captions)
    folder = speed.write_lora_data(tmp_path, per_kind=1)
    assert sorted(p.name for p in folder.iterdir()) == ["clip0000", "clip0000.txt", "clip0001", "clip0001.txt"]
    assert (folder / "clip0000.txt").read_text().startswith("slow ")


def test_the_shipped_slow_lora_records_its_run_and_took_under_ten_cpu_minutes():
    made = json.loads((speed.slow_lora() / "training.json").read_text())
    assert {"command", "steps", "cpu_seconds", "device", "torch", "date", "note"} <= set(made)
    assert made["cpu_seconds"] < 600
    log = (speed.slow_lora() / "log.jsonl").read_text().splitlines()
    assert len(log) == made["steps"] and json.loads(log[-1])["step"] == made["steps"]


def test_the_shipped_slow_lora_makes_slow_shapes_and_unloads_exactly():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.set_progress_bar_config(disable=True)
    combos = list(speed.SLOW_HELD_OUT)  # the four combinations its data never showed

    def run(word):
        return pipe([speed.caption(*c, speed=word) for c in combos], num_frames=8, num_inference_steps=10,
                    generator=torch.Generator().manual_seed(0)).frames

    plain = run("slow")
    assert [read_speed(v) for v in plain] == ["usual"] * 4  # the shipped model ignores the new word
    pipe.load_lora_weights(speed.slow_lora(), adapter_name="slow")
    assert [read_speed(v) for v in run("slow")] == ["slow"] * 4
    assert [read_speed(v) for v in run(None)] == ["usual"] * 4  # without the word, the usual speed
    pipe.unload_lora_weights()
    assert np.array_equal(run("slow"), plain)
