"""The toy world's fifth colour (purple, taught by a LoRA in notebook 14): drawn, read by the evaluator, and
leaving the original world's clips exactly as they were; the shipped LoRA loads and acts."""

from __future__ import annotations

import numpy as np
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.toy import data, purple
from t2vlab.toy.evaluate import read_video


def test_purple_is_drawn_and_read_and_the_original_world_is_unchanged():
    clips, labels = data.make_clips(6, seed=0, combos=data.PURPLE_COMBOS)
    assert all(c.startswith("a purple ") for c in data.captions(labels))
    assert [read_video(c)[0] for c in clips] == ["purple"] * 6
    # the four colours keep their indices: a clip of the original world is drawn with the same numbers
    original, labels = data.make_clips(4, seed=3)
    colour = torch.tensor([[0.90, 0.12, 0.10], [0.12, 0.80, 0.20], [0.15, 0.25, 0.95], [0.95, 0.85, 0.10]])
    assert torch.equal(torch.tensor(list(data.PALETTE.values()))[:4], colour)
    assert [read_video(c)[0] for c in original] == [list(data.COLOURS)[i] for i in labels["colour"].tolist()]


def test_lora_data_leaves_the_held_out_purple_combinations_out(tmp_path):
    clips, captions = purple.lora_clips(per_kind=20)
    assert len(clips) == 40 and sum(c.startswith("a purple") for c in captions) == 20
    assert not {data.caption(*c) for c in data.PURPLE_HELD_OUT} & set(captions)
    folder = purple.write_lora_data(tmp_path, per_kind=2)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["clip0000", "clip0000.txt"]
    assert len(list((folder / "clip0000").glob("*.png"))) == data.FRAMES


def test_the_shipped_purple_lora_loads_changes_purple_and_unloads_exactly():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe("a purple circle moving left", num_frames=8, num_inference_steps=4,
                    generator=torch.Generator().manual_seed(0)).frames

    plain = run()
    pipe.load_lora_weights(purple.purple_lora())
    assert np.abs(run() - plain).max() > 0.05
    pipe.unload_lora_weights()
    assert np.array_equal(run(), plain)
