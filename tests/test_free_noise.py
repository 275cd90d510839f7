"""FreeNoise (t2vlab.techniques.free_noise): windowed temporal attention and noise rescheduling, and its bad input."""

from __future__ import annotations

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.techniques.free_noise import FreeNoise, attend_in_windows, reschedule_noise, window_weights
from t2vlab.unet.spatial import TransformerBlock
from t2vlab.unet.temporal import TemporalTransformer

from .helpers import randomize_, rel_err

SMALL = dict(height=32, width=32, num_inference_steps=2, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    p = TextToVideoPipeline.from_pretrained("tiny")
    randomize_(p.unet, seed=2, std=0.1)  # the temporal layers are not left at zero
    p.set_progress_bar_config(disable=True)
    return p


def generate(pipe, frames, seed=0, **kw):
    return pipe("a panda playing a guitar", num_frames=frames, generator=torch.Generator().manual_seed(seed),
                **{**SMALL, **kw}).frames


# ------------------------------------------------------------------------------ the whole pipeline
@pytest.mark.parametrize("context_length", [6, 7, 16])
def test_context_covering_all_frames_is_the_plain_result_exactly(pipe, context_length):
    plain = generate(pipe, 6)
    pipe.enable_free_noise(context_length=context_length, context_stride=2)
    try:
        free = generate(pipe, 6)
    finally:
        pipe.disable_free_noise()
    assert torch.equal(free, plain)


def test_free_noise_changes_a_longer_video_and_disabling_restores_it(pipe):
    plain = generate(pipe, 10)
    pipe.enable_free_noise(context_length=4, context_stride=2)
    try:
        free = generate(pipe, 10)
    finally:
        pipe.disable_free_noise()
    assert rel_err(free, plain) > 1e-2
    assert torch.equal(generate(pipe, 10), plain)
    assert all(m.windows is None for m in pipe.unet.modules() if isinstance(m, TemporalTransformer))


def test_starting_noise_is_rescheduled_and_each_part_acts_alone(pipe):
    """prepare_latents gives the rescheduled noise; the UNet's windows alone also change the video."""
    shape_args = (1, 12, 32, 32, torch.float32, "cpu")
    drawn = pipe.prepare_latents(*shape_args, torch.Generator().manual_seed(3))
    pipe.enable_free_noise(context_length=4, context_stride=2, noise_type="shuffle_context")
    try:
        start = pipe.prepare_latents(*shape_args, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        torch.randn(drawn.shape, generator=g)  # the noise is drawn first, then the shuffles
        assert torch.equal(start, reschedule_noise(drawn, 4, 2, "shuffle_context", g))
        assert not torch.equal(start, drawn) and torch.equal(start[:, :, :4], drawn[:, :, :4])
        # windows only: the same starting latents, plain vs windowed UNet
        windowed = generate(pipe, 12, latents=drawn)
    finally:
        pipe.disable_free_noise()
    assert rel_err(windowed, generate(pipe, 12, latents=drawn)) > 1e-3


# ---------------------------------------------------------------------- windowed temporal attention
def block_and_tokens(frames, seed=0, dim=16):
    block = randomize_(TransformerBlock(dim, heads=2, dim_head=8), seed=seed).eval()
    return block, torch.randn(6, frames, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scheme", ["flat", "pyramid", "delayed_reverse_sawtooth"])
def test_one_window_over_all_frames_is_plain_attention(scheme):
    block, tokens = block_and_tokens(8)
    with torch.no_grad():
        plain = block(tokens)
        one = attend_in_windows(block, tokens, FreeNoise(8, 3, scheme))
    assert rel_err(one, plain) <= 1e-6  # x * w / w: one rounding per element


def test_windows_differ_from_plain_attention_and_fuse_as_weighted_means():
    block, tokens = block_and_tokens(6)
    windows = FreeNoise(4, 2, "pyramid")  # spans (0, 4), (2, 6); weights [1, 2, 2, 1]
    with torch.no_grad():
        got = attend_in_windows(block, tokens, windows)
        a, b = block.attend(tokens[:, 0:4]), block.attend(tokens[:, 2:6])
    assert rel_err(got, block(tokens)) > 1e-3
    w = torch.tensor([1.0, 2, 2, 1])[None, :, None]
    fused = torch.cat([a[:, :2], (a[:, 2:] * w[:, 2:] + b[:, :2] * w[:, :2]) / (w[:, 2:] + w[:, :2]), b[:, 2:]], 1)
    assert rel_err(got, block.feed_forward(fused)) <= 1e-6


def test_far_frames_do_not_see_each_other():
    block, tokens = block_and_tokens(12)
    windows = FreeNoise(4, 2)
    changed = tokens.clone()
    changed[:, 11] = 3 * torch.randn(changed[:, 11].shape)  # (a constant shift would vanish in the LayerNorm)
    with torch.no_grad():
        before, after = attend_in_windows(block, tokens, windows), attend_in_windows(block, changed, windows)
        plain_before, plain_after = block(tokens), block(changed)
    assert torch.equal(before[:, :8], after[:, :8])  # frame 11 is only in the window (8, 12)
    assert (plain_before[:, 0] - plain_after[:, 0]).abs().max() > 1e-4  # plain attention: every frame sees frame 11


def test_temporal_transformer_switches_windows_on_only_beyond_the_context():
    layer = randomize_(TemporalTransformer(16, 2, 8, groups=4), seed=1).eval()
    x = torch.randn(2 * 8, 16, 3, 3)  # 2 videos x 8 frames
    with torch.no_grad():
        plain = layer(x, 8)
        layer.windows = FreeNoise(8, 2)
        assert torch.equal(layer(x, 8), plain)
        layer.windows = FreeNoise(4, 2)
        assert rel_err(layer(x, 8), plain) > 1e-3


def test_spans_and_weights():
    assert FreeNoise(16, 4).spans(24) == [(0, 16), (4, 20), (8, 24)]
    assert FreeNoise(16, 4).spans(25) == [(0, 16), (4, 20), (8, 24), (9, 25)]
    assert FreeNoise(8, 8).spans(20) == [(0, 8), (8, 16), (12, 20)]
    assert FreeNoise(16, 4).spans(10) == [(0, 10)]
    assert window_weights(4, "pyramid") == [1, 2, 2, 1] and window_weights(5, "pyramid") == [1, 2, 3, 2, 1]
    assert window_weights(4, "delayed_reverse_sawtooth") == [0.01, 2, 2, 1]
    assert window_weights(5, "delayed_reverse_sawtooth") == [0.01, 0.01, 3, 2, 1]
    assert window_weights(3, "flat") == [1, 1, 1]


# ------------------------------------------------------------------------------ noise rescheduling
def test_rescheduled_noise_repeats_the_first_window_in_the_shuffled_order():
    L, stride, frames = 8, 4, 30
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, frames, 5, 5, generator=g)
    out = reschedule_noise(noise, L, stride, "shuffle_context", g)
    replay = torch.Generator().manual_seed(0)
    torch.randn(noise.shape, generator=replay)  # same state as after the draw
    assert torch.equal(out[:, :, :L], noise[:, :, :L])
    for start in range(L, frames, stride):
        order = start - L + torch.randperm(stride, generator=replay)
        n = min(stride, frames - start)
        assert torch.equal(out[:, :, start:start + n], out[:, :, order[:n]])
    first = noise[:, :, :L].permute(2, 0, 1, 3, 4).flatten(1)  # (L, rest)
    for f in range(frames):  # every frame is one of the first window's frames
        assert (out[:, :, f].flatten() == first).all(dim=1).any()


def test_rescheduled_noise_is_standard_normal_per_frame():
    g = torch.Generator().manual_seed(1)
    out = reschedule_noise(torch.randn(4, 4, 40, 32, 32, generator=g), 8, 4, "shuffle_context", g)
    per_frame = out.permute(2, 0, 1, 3, 4).flatten(1)  # (F, 16384 values)
    assert per_frame.mean(1).abs().max() < 0.04  # 4 sigma of a mean of 16384 N(0, 1)
    assert (per_frame.std(1) - 1).abs().max() < 0.03
    assert not torch.equal(out[:, :, 8:12], out[:, :, 0:4])  # shuffled, not copied in order (for this seed)


def test_other_noise_types_and_generator_lists():
    noise = torch.randn(2, 1, 10, 2, 2)
    assert torch.equal(reschedule_noise(noise, 4, 2, "random"), noise)
    assert torch.equal(reschedule_noise(noise, 4, 2, "repeat_context")[:, :, 9], noise[:, :, 1])
    assert torch.equal(reschedule_noise(noise, 10, 2), noise)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    out = reschedule_noise(noise, 4, 4, "shuffle_context", gens)
    for b, s in enumerate((0, 1)):
        perm = torch.randperm(4, generator=torch.Generator().manual_seed(s))
        assert torch.equal(out[b, :, 4:8], noise[b, :, perm])


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, name", [
    (dict(context_length=0), "context_length"), (dict(context_length=-4), "context_length"),
    (dict(context_length=8.0), "context_length"), (dict(context_length="16"), "context_length"),
    (dict(context_stride=0), "context_stride"), (dict(context_length=8, context_stride=9), "context_stride"),
    (dict(context_stride=2.5), "context_stride"), (dict(weighting_scheme="gaussian"), "weighting_scheme"),
    (dict(noise_type="shuffle"), "noise_type"), (dict(prompt_interpolation_callback="lerp"),
                                                  "prompt_interpolation_callback"),
])
def test_bad_settings_name_the_argument(pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        pipe.enable_free_noise(**kwargs)
    assert pipe.free_noise is None
    assert all(m.windows is None for m in pipe.unet.modules() if isinstance(m, TemporalTransformer))


def test_context_length_none_is_the_checkpoints_clip_length(pipe):
    pipe.enable_free_noise(context_length=None, context_stride=2)
    try:
        assert pipe.free_noise == FreeNoise(pipe.recommended.num_frames, 2)
    finally:
        pipe.disable_free_noise()


# ------------------------------------------------------------------ the long-video measures (toy)
def test_long_video_report_reads_colour_windows_and_jumps():
    from t2vlab.toy.data import make_clips
    from t2vlab.toy.evaluate import long_video_report

    clips, labels = make_clips(1, seed=3, combos=(("red", "square", "right"),))
    clip = clips[0]  # 8 frames, the square crossing half the frame to the right
    steady = long_video_report(clip, "red", "right")
    assert steady == {**steady, "colour": 1.0, "direction": 1.0, "shown": 1.0, "windows": ["right"]}
    assert 2 < steady["max_jump"] < 8
    replay = long_video_report(torch.cat([clip, clip]), "red", "right")  # starts over: a jump back
    assert replay["windows"] == ["right", "right"] and replay["max_jump"] > 20
    assert long_video_report(clip, "blue", "left")["colour"] == 0.0
