"""Weighted and long prompts on the pipelines (``prompt_syntax``, ``truncate_long_prompts``): a short plain prompt
gives today's embeddings bit for bit; a long one is chunked (the negative padded to match) and generates; the old
way cuts with a warning; a weighted prompt gives what its embeddings from ``encode_prompts`` give, in text-to-video,
prompt travel and video-to-video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2vlab import VideoToVideoPipeline
from t2vlab.techniques import prompt_travel
from t2vlab.techniques.prompt_weighting import encode_prompts
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = dict(num_frames=2, num_inference_steps=2, height=32, width=32)
LONG = " ".join(["a red circle moving left over a dark grey floor"] * 20)  # 200 tokens


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=8)


def seed(s=0):
    return torch.Generator().manual_seed(s)


def test_a_short_plain_prompt_gives_todays_embeddings(pipe):
    cond, uncond = pipe.encode_prompt(["a cat", "a dog on a hill"], "cpu", negative_prompt="blurry")
    with torch.no_grad():  # what encode_prompt computed before prompt weighting
        today = pipe.text_encoder(pipe.tokenizer(["a cat", "a dog on a hill"]).input_ids)
        today_negative = pipe.text_encoder(pipe.tokenizer(["blurry", "blurry"]).input_ids)
    assert torch.equal(cond, today) and torch.equal(uncond, today_negative)


def test_a_long_prompt_is_chunked_and_generates(pipe):
    assert len(pipe.tokenizer.tokenize(LONG)) == 200
    cond, uncond = pipe.encode_prompt(LONG, "cpu")
    assert cond.shape[1] == 77 * 3 == uncond.shape[1]  # ceil(200 / 75) chunks; the negative "" padded to three
    empty, _ = pipe.encode_prompt("", "cpu", do_classifier_free_guidance=False)
    assert torch.equal(uncond, empty.repeat(1, 3, 1))
    frames = pipe(LONG, generator=seed(), **ARGS).frames
    assert frames.shape == (1, 2, 32, 32, 3) and np.isfinite(frames).all()
    assert not np.array_equal(frames, pipe(LONG, truncate_long_prompts=True, generator=seed(), **ARGS).frames)


def test_the_old_way_cuts_with_a_warning_naming_what_was_cut(pipe):
    with pytest.warns(UserWarning, match="dropped: 'over a dark grey floor a red"):
        cond, _ = pipe.encode_prompt(LONG, "cpu", truncate_long_prompts=True)
    assert cond.shape[1] == 77


@pytest.mark.parametrize("syntax,prompt", [("a1111", "a (red:1.4) circle [moving] left"),
                                           ("compel", "a red++ circle moving- (left)1.2")])
def test_a_weighted_prompt_gives_what_its_embeddings_give(pipe, syntax, prompt):
    embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompt, "blurry", prompt_syntax=syntax)
    weighted = pipe(prompt, negative_prompt="blurry", prompt_syntax=syntax, generator=seed(), **ARGS).frames
    given = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=seed(), **ARGS).frames
    assert np.array_equal(weighted, given)
    assert not np.array_equal(weighted, pipe(prompt, negative_prompt="blurry", generator=seed(), **ARGS).frames)


def test_prompt_travel_reads_weighted_and_long_keyframe_texts(pipe):
    prompt = {0: "a (red:1.4) circle", 3: LONG}
    cond, uncond = prompt_travel.encode_prompt_travel(pipe, prompt, None, 4, "cpu", prompt_syntax="a1111")
    texts, _ = encode_prompts(pipe.tokenizer, pipe.text_encoder, list(prompt.values()), prompt_syntax="a1111")
    assert cond.shape == (1, 4, 77 * 3, 32) and uncond.shape == cond.shape  # "" padded to the keyframes' chunks
    assert torch.equal(cond[0, 0], texts[0]) and torch.equal(cond[0, 3], texts[1])
    frames = pipe(prompt, prompt_syntax="a1111", generator=seed(), **dict(ARGS, num_frames=4)).frames
    assert frames.shape == (1, 4, 32, 32, 3) and np.isfinite(frames).all()


def test_video_to_video_reads_weighted_prompts(pipe):
    v2v = VideoToVideoPipeline.from_pipe(pipe)
    video = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    args = dict(video=video, strength=0.5, num_inference_steps=2)
    embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, "a (cat:1.5)", "", prompt_syntax="a1111")
    weighted = v2v("a (cat:1.5)", prompt_syntax="a1111", generator=seed(), **args).frames
    assert np.array_equal(weighted, v2v(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=seed(),
                                        **args).frames)
    assert not np.array_equal(weighted, v2v("a (cat:1.5)", generator=seed(), **args).frames)


def test_bad_prompt_reading_arguments_are_refused(pipe):
    with pytest.raises(ValueError, match="prompt_syntax must be one of"):
        pipe("a cat", prompt_syntax="A1111", **ARGS)
    with pytest.raises(ValueError, match="truncate_long_prompts must be True or False"):
        pipe("a cat", truncate_long_prompts="yes", **ARGS)
    with pytest.raises(ValueError, match="prompt_syntax"):
        VideoToVideoPipeline.from_pipe(pipe)("a cat", video=np.zeros((2, 32, 32, 3)), prompt_syntax="sd")
    with pytest.raises(ValueError, match=r"unbalanced|\(.*at"):  # an unbalanced bracket: said where (the parser)
        pipe("a (cat", prompt_syntax="a1111", **ARGS)
