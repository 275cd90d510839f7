"""The toy world's fifth colour (purple, taught by a LoRA in notebook 14): drawn, read by the evaluator, and
leaving the original world's clips exactly as they were; the shipped LoRA loads and acts; shapes of any
colour, and the decoder stage that teaches the toy VAE to show them (``t2vlab.toy.decoder``) with the
encoder untouched."""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from t2vlab import AutoencoderKL, TextToVideoPipeline, toy_checkpoint
from t2vlab.toy import data, purple
from t2vlab.toy.decoder import colours_kept, train_decoder
from t2vlab.toy.evaluate import colour_and_direction
from t2vlab.toy.train import TOY_VAE


def test_purple_is_drawn_and_read_and_the_original_world_is_unchanged():
    clips, labels = data.make_clips(6, seed=0, combos=data.PURPLE_COMBOS)
    assert all(c.startswith("a purple ") for c in data.captions(labels))
    assert [colour_and_direction(c)[0] for c in clips] == ["purple"] * 6
    # the four colours keep their indices: a clip of the original world is drawn with the same numbers
    original, labels = data.make_clips(4, seed=3)
    colour = torch.tensor([[0.90, 0.12, 0.10], [0.12, 0.80, 0.20], [0.15, 0.25, 0.95], [0.95, 0.85, 0.10]])
    assert torch.equal(torch.tensor(list(data.PALETTE.values()))[:4], colour)
    assert [colour_and_direction(c)[0] for c in original] == [list(data.COLOURS)[i] for i in labels["colour"].tolist()]


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


def test_random_colours_are_hsv_at_the_palettes_brightness_and_render_as_given():
    hue, sat, val = torch.rand(3, 200, generator=torch.Generator().manual_seed(5))
    want = torch.tensor([colorsys.hsv_to_rgb(h, 0.55 + 0.4 * s, 0.8 + 0.15 * v)
                         for h, s, v in zip(hue.tolist(), sat.tolist(), val.tolist())])
    got = data.random_colours(200, seed=5)
    assert torch.allclose(got, want, atol=1e-6) and got.amax(1).min() >= 0.8
    labels = data.sample_labels(3, seed=1, combos=data.ALL_COMBOS)
    plain = data.render(labels)
    labels["rgb"] = got[:3]
    painted = data.render(labels)
    shape = data.shape_masks(labels, data.centres(labels))  # (n, F, H, W): where the shape itself is
    assert not torch.equal(plain, painted)
    for i in range(3):  # where the shape is: the given colour, with the clip's brightness jitter
        pixels = painted[i][shape[i]]
        assert torch.allclose(pixels, (got[i] + labels["tint"][i]).clamp(0, 1).expand_as(pixels), atol=1e-6)


def test_the_decoder_stage_trains_the_decoder_alone():
    vae = AutoencoderKL.from_config(TOY_VAE)
    encoder = {k: v.clone() for k, v in vae.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    decoder = {k: v.clone() for k, v in vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    z = torch.randn(4, 4, 8, 8)
    kept = (z, torch.rand(4, 3, 64, 64) * 2 - 1)
    train_decoder(vae, steps=2, batch=6, kept=kept)
    state = vae.state_dict()
    assert all(torch.equal(state[k], v) for k, v in encoder.items())  # the UNet's latents keep their meaning
    assert any(not torch.equal(state[k], v) for k, v in decoder.items())
    assert not any(p.requires_grad for p in vae.parameters())


def test_the_shipped_purple_vae_shows_purple_and_keeps_the_toys_encoder():
    toy = AutoencoderKL.from_pretrained(toy_checkpoint() / "vae")
    general = AutoencoderKL.from_pretrained(purple.purple_vae())
    for k, v in toy.state_dict().items():
        if k.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(general.state_dict()[k], v), k
    assert general.config.scaling_factor == toy.config.scaling_factor
    assert colours_kept(toy, data.PURPLE_COMBOS, n=12) <= 0.25  # the toy's own decoder returns purple as red
    assert colours_kept(general, data.PURPLE_COMBOS, n=12) == 1.0
    assert colours_kept(general, data.ALL_COMBOS, n=12) == 1.0
