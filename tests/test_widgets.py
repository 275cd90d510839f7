"""The studio and the explorers, driven as a user would (set values, click), on the tiny checkpoint."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

from t2vlab.pipeline import TextToVideoPipeline
from t2vlab.video import read_video
from t2vlab.widgets import AttentionExplorer, DenoisingScrubber, ScheduleExplorer, Studio
from t2vlab.widgets.attention import temporal_map, token_maps
from t2vlab.widgets.figures import sample_picture
from t2vlab.widgets.generation import Settings, generate
from t2vlab.widgets.schedule import noised_picture, schedule_curves, timesteps_for


@pytest.fixture(scope="module")
def pipe():
    return TextToVideoPipeline.from_pretrained("tiny")


@pytest.fixture(scope="module")
def studio(pipe, tmp_path_factory):
    s = Studio(pipe, out_dir=tmp_path_factory.mktemp("studio"))
    s.prompt.value = "a red balloon over the sea"
    s.steps.value, s.frames.value, s.height.value, s.width.value = 3, 4, 64, 48
    s.seed.value = 7
    return s


def _embedded_mp4(html_value, tmp_path):
    b64 = re.search(r'src="data:video/mp4;base64,([^"]+)"', html_value).group(1)
    path = tmp_path / "embedded.mp4"
    path.write_bytes(base64.b64decode(b64))
    return read_video(path)


def test_generate_shows_video_download_history_and_full_progress(studio, tmp_path):
    seen, during = [], []
    studio.on_result(seen.append)
    step_done = studio._step_done

    def watch(done, total):  # the button is disabled and the bar moves while the run goes on
        during.append((studio.generate.disabled, studio.progress.value))
        step_done(done, total)

    studio._step_done = watch
    studio.generate.click()
    studio._step_done = step_done
    assert during == [(True, 0), (True, 1), (True, 2)]
    assert studio.last_error is None, studio.status.value
    assert "<video" in studio.video.value
    video = _embedded_mp4(studio.video.value, tmp_path)
    assert video.shape == (4, 64, 48, 3)
    assert read_video(studio.last_result.video_path).shape == (4, 64, 48, 3)
    assert 'download="' in studio.download.value and "data:video/mp4;base64," in studio.download.value
    assert studio.progress.value == studio.progress.max == 3
    assert not studio.generate.disabled
    entry = studio.history[-1]
    assert (entry.settings.prompt, entry.settings.steps, entry.settings.frames, entry.settings.seed) == \
        ("a red balloon over the sea", 3, 4, 7)
    assert "a red balloon over the sea" in studio.history_box.value and "seed 7" in studio.history_box.value
    assert seen == [entry]
    assert len(entry.trajectory) == 3 and entry.trajectory.latents[0].shape == (4, 4, 8, 6)


def test_bad_input_shows_a_message_and_the_studio_keeps_working(studio):
    before = len(studio.history)
    studio.height.value = 60
    studio.generate.click()  # must not raise
    assert "Could not generate" in studio.status.value and "divisible by 8" in studio.status.value
    assert "Traceback" not in studio.status.value
    assert not studio.generate.disabled and len(studio.history) == before
    studio.height.value = 64
    studio.scheduler.value = "euler"
    studio.generate.click()
    assert studio.last_error is None and len(studio.history) == before + 1
    assert studio.history[-1].settings.scheduler == "euler" and "<video" in studio.video.value


def test_dice_draws_a_seed_in_range_and_the_next_video_uses_it(studio, monkeypatch):
    import random

    from t2vlab.widgets.studio import MAX_SEED

    draws = iter([12345, MAX_SEED])
    monkeypatch.setattr(random, "randint", lambda lo, hi: (lo, hi) == (0, MAX_SEED) and next(draws))
    studio.dice.click()
    assert studio.seed.value == 12345
    studio.generate.click()
    assert studio.last_error is None and studio.history[-1].settings.seed == 12345
    studio.dice.click()
    assert studio.seed.value == MAX_SEED  # the largest draw fits the box


def test_same_seed_same_video(pipe, tmp_path):
    settings = Settings(prompt="a cat", steps=2, frames=2, height=32, width=32, seed=3)
    a = generate(pipe, settings, out_dir=tmp_path, record=False)
    b = generate(pipe, settings, out_dir=tmp_path, record=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert len(a.trajectory) == 0


def test_scrubber_steps_through_the_run(pipe, studio):
    scrubber = DenoisingScrubber(pipe, studio=studio)
    steps = studio.last_result.settings.steps
    assert scrubber.step.max == steps - 1 and scrubber.step.value == steps - 1
    last = scrubber.image.value
    scrubber.step.value = 0
    assert scrubber.image.value[:8] == b"\x89PNG\r\n\x1a\n" and scrubber.image.value != last
    assert "step 1 of" in scrubber.info.value
    assert scrubber.predicted_frames(0).shape == (studio.last_result.settings.frames, 64, 48, 3)


def test_schedule_explorer_follows_t_and_scheduler():
    ex = ScheduleExplorer(t=100, scheduler="ddim", steps=10)
    first, text = ex.image.value, ex.timesteps_text.value
    ex.t.value = 700
    assert ex.image.value != first
    assert ex.timesteps().tolist() == timesteps_for("ddim", 10).tolist()
    ex.scheduler.value = "dpm++-karras"
    assert ex.timesteps_text.value != text and "dpm++-karras" in ex.timesteps_text.value
    assert ex.timesteps().tolist() != timesteps_for("ddim", 10).tolist()


def test_noised_picture_keeps_signal_early_and_loses_it_late():
    train = ScheduleExplorer().train
    picture = sample_picture(32)
    early, late = noised_picture(picture, train, 0, seed=1), noised_picture(picture, train, 999, seed=1)
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])  # noqa: E731
    assert corr(early, picture) > 0.99 and abs(corr(late, picture)) < 0.2
    curves = schedule_curves(train)
    assert np.all(np.diff(curves["alpha_bar"]) < 0) and np.all(np.diff(curves["snr"]) < 0)


def test_attention_maps_have_the_latent_size_and_sum_to_one(pipe):
    ex = AttentionExplorer(pipe, prompt="a red cat", frames=3)
    rec = ex.record_
    assert rec.tokens == ["<|startoftext|>", "a", "red", "cat", "<|endoftext|>"]
    h, w = rec.latent_size
    assert (h, w) == (8, 8) and rec.frames == 3
    maps = token_maps(rec, frame=2)
    assert maps.shape == (77, h, w)
    torch.testing.assert_close(maps.sum(0), torch.ones(h, w))  # at each pixel, attention over all tokens
    for probs, (hk, wk) in zip(rec.cross, rec.sizes):
        assert probs.shape == (3, hk * wk, 77)
    tm = temporal_map(rec, 3, 4)
    assert tm.shape == (3, 3)
    torch.testing.assert_close(tm.sum(-1), torch.ones(3))
    assert ex.token.value == 2  # 'red': the first word that is not a small word like 'a'
    before = ex.image.value
    ex.token.value = 3
    assert ex.image.value != before
    ex.frame.value, ex.y.value = 1, 0
    assert ex.image.value[:4] == b"\x89PNG"
    # keep_probs is switched off again, so later runs use the fast attention path
    assert all(not m.keep_probs and m.last_probs is None for m in pipe.unet.modules() if hasattr(m, "keep_probs"))


def test_attention_from_a_studio_run_uses_its_latents(pipe, studio):
    ex = AttentionExplorer(pipe, result=studio.last_result)
    r = studio.last_result
    assert ex.record_.frames == r.settings.frames
    assert ex.record_.latent_size == (8, 6)
    assert ex.record_.timestep == r.trajectory.timesteps[len(r.trajectory) // 2]
