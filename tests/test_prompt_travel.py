"""Prompt travel (t2vlab.techniques.prompt_travel): a dict {frame: text} gives every frame its own text embedding."""

from __future__ import annotations

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.schedulers import from_name
from t2vlab.techniques.prompt_travel import encode_prompt_travel, frame_embeddings, lerp_embeddings
from t2vlab.toy.evaluate import colour_and_direction

from .helpers import rel_err, tiny_pipe

SMALL = dict(height=32, width=32, num_frames=6, num_inference_steps=2, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=4, std=0.1)


def generate(pipe, prompt, seed=0, **kw):
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **{**SMALL, **kw}).frames


def test_linear_interpolation_between_keyframes():
    a, b, c = torch.zeros(3, 2), torch.ones(3, 2), torch.full((3, 2), 5.0)
    out = frame_embeddings({2: a, 6: b, 8: c}, 10)
    assert out.shape == (10, 3, 2)
    assert torch.equal(out[0], a) and torch.equal(out[2], a)  # before the first keyframe: its text
    assert torch.allclose(out[4], (a + b) / 2) and torch.allclose(out[5], 0.25 * a + 0.75 * b)
    assert torch.equal(out[6], b) and torch.allclose(out[7], (b + c) / 2) and torch.equal(out[9], c)
    assert torch.equal(lerp_embeddings(0, 1, a[None], b[None]), torch.stack([a, b]))


def test_a_callback_replaces_the_rule_and_its_shape_is_checked():
    def hold(start_frame, end_frame, start, end):  # keep the start text up to the next keyframe
        out = start.repeat(end_frame - start_frame + 1, 1, 1)
        out[-1] = end[0]
        return out

    a, b = torch.zeros(3, 2), torch.ones(3, 2)
    out = frame_embeddings({0: a, 4: b}, 6, hold)
    assert torch.equal(out[3], a) and torch.equal(out[4], b)
    with pytest.raises(ValueError, match="prompt_interpolation_callback"):
        frame_embeddings({0: a, 4: b}, 6, lambda s, e, x, y: x)


def test_one_keyframe_is_the_plain_prompt(pipe):
    plain = generate(pipe, "a panda playing a guitar", negative_prompt="blurry")
    travel = generate(pipe, {0: "a panda playing a guitar"}, negative_prompt={3: "blurry"})
    assert rel_err(travel, plain) <= 1e-5  # same numbers; keys projected per frame instead of per video


def test_each_frame_reads_its_own_text(pipe):
    cond, uncond = encode_prompt_travel(pipe, {0: "a cat", 5: "a dog"}, "ugly", 6, "cpu", num_videos_per_prompt=2)
    cat, _ = pipe.encode_prompt("a cat", "cpu", do_classifier_free_guidance=False)
    dog, _ = pipe.encode_prompt("a dog", "cpu", do_classifier_free_guidance=False)
    ugly, _ = pipe.encode_prompt("ugly", "cpu", do_classifier_free_guidance=False)
    assert cond.shape == (2, 6, *cat.shape[1:]) and uncond.shape == cond.shape
    assert torch.equal(cond[1, 0], cat[0]) and torch.equal(cond[0, 5], dog[0])
    assert torch.allclose(cond[0, 2], 0.6 * cat[0] + 0.4 * dog[0], atol=1e-6)
    assert torch.equal(uncond[1, 3], ugly[0])
    # and the UNet reads them: changing only the last keyframe's text changes the video
    a = generate(pipe, {0: "a cat", 5: "a dog"})
    b = generate(pipe, {0: "a cat", 5: "a bird"})
    assert rel_err(a, b) > 1e-4


def test_works_with_free_noise_and_a_callback(pipe):
    seen = []

    def lerp(start_frame, end_frame, start, end):
        seen.append((start_frame, end_frame))
        return lerp_embeddings(start_frame, end_frame, start, end)

    pipe.enable_free_noise(context_length=4, context_stride=2, prompt_interpolation_callback=lerp)
    try:
        out = generate(pipe, {0: "a cat", 9: "a dog"}, num_frames=10, negative_prompt={0: "x", 4: "y"},
                       num_videos_per_prompt=2)
    finally:
        pipe.disable_free_noise()
        pipe.prompt_interpolation_callback = None
    assert out.shape[:3] == (2, 4, 10) and torch.isfinite(out).all()
    assert seen == [(0, 9), (0, 4)]


def test_unet_takes_one_text_per_frame(pipe):
    unet, g = pipe.unet, torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 5, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        shared = unet(x, 500, text)
        per_frame = unet(x, 500, text[:, None].expand(-1, 3, -1, -1))
        with pytest.raises(ValueError, match="encoder_hidden_states has 2 frames"):
            unet(x, 500, text[:, None].expand(-1, 2, -1, -1))
    assert rel_err(per_frame, shared) <= 1e-6


@pytest.mark.parametrize("kwargs, name, words", [
    (dict(prompt={}), "prompt", "empty"),
    (dict(prompt={0: "a", 6: "b"}), "prompt", "outside"),
    (dict(prompt={-1: "a"}), "prompt", "outside"),
    (dict(prompt={0.5: "a"}), "prompt", "not an integer"),
    (dict(prompt={"0": "a"}), "prompt", "not an integer"),
    (dict(prompt={True: "a"}), "prompt", "not an integer"),
    (dict(prompt={0: 3}), "prompt", "string"),
    (dict(prompt="a", negative_prompt={9: "b"}), "negative_prompt", "outside"),
    (dict(prompt=["a", "b"], negative_prompt={0: "b"}), "negative_prompt", "one text prompt"),
])
def test_bad_keyframes_name_the_argument(pipe, kwargs, name, words):
    with pytest.raises(ValueError, match=rf"^{name}\b.*{words}"):
        pipe(**{**SMALL, **kwargs})


@pytest.mark.slow
def test_toy_travels_from_red_to_blue():
    """On the toy (trained on 8-frame clips), 24 frames with FreeNoise at its 8-frame context and the
    prompt changing from red (frame 0) to blue (frame 16, the last window): over 8 seeds the evaluator
    reads red at the start (frames 0-3) and blue in the last window in at least 90% of the videos. 10 DPM-Solver++
    steps, not the toy's 25: the same 8 of 8 (measured 2026-12-01) in 2/5 of the time (25 steps took 4 minutes of
    CI's one thread, issue 31). (The toy switches colour around frame 6-8, half way through the blend, so the
    first whole window holds a mix of red and blue, which the evaluator reads as ambiguous, None: it no longer
    calls a mix by the nearest colour.)"""
    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_free_noise(context_length=8, context_stride=4)
    seeds = range(8)
    videos = pipe({0: "a red square moving right", 16: "a blue square moving right"}, num_frames=24,
                  num_inference_steps=10, guidance_scale=9.0, num_videos_per_prompt=len(seeds),
                  generator=[torch.Generator().manual_seed(s) for s in seeds]).frames
    first = [colour_and_direction(v[:4])[0] for v in videos]
    last = [colour_and_direction(v[16:])[0] for v in videos]
    hits = sum(a == "red" and b == "blue" for a, b in zip(first, last))
    assert hits >= 0.9 * len(seeds), list(zip(first, last))
