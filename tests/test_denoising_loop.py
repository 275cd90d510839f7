"""The denoising loop: ``__call__`` reads as its public steps, ``pipe.denoise`` is the loop every pipeline
reuses (hooks included), and the finiteness guard stops at the first bad step."""

from __future__ import annotations

import inspect

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.guards import FiniteWatch


@pytest.fixture(scope="module")
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def test_call_is_the_public_steps_and_checks_nothing_inline():
    """``__call__`` reads as its numbered steps: every argument checked by one named call into guards.py first,
    nothing raised or type-tested inline, no argument passed on wholesale (``**locals()``)."""
    source = inspect.getsource(TextToVideoPipeline.__call__)
    body = source.split('"""')[2]  # after the docstring
    assert "raise" not in body and "isinstance" not in body and "locals()" not in body
    calls = [line.strip() for line in body.splitlines() if line.strip()]
    assert any(line.startswith("videos = check_generation_args(") for line in calls[:4])
    for step in ("encode_prompt", "prepare_latents", "denoise", "finish"):
        assert f"self.{step}(" in body


def test_the_public_loop_gives_the_pipelines_video(pipe):
    g = torch.Generator().manual_seed(3)
    whole = pipe("a red circle", num_frames=3, num_inference_steps=4, generator=g, output_type="pt").frames

    cond, uncond = pipe.encode_prompt("a red circle", "cpu")
    pipe.scheduler.set_timesteps(4)
    x = pipe.prepare_latents(1, 3, 64, 64, torch.float32, "cpu", torch.Generator().manual_seed(3))
    seen = []
    x = pipe.denoise(x, torch.cat([uncond, cond]), pipe.scheduler.timesteps, 9.0,
                     hooks=[lambda i, t, x, x0: seen.append(int(t)) or x])
    assert seen == pipe.scheduler.timesteps.tolist()
    torch.testing.assert_close(pipe.decode_latents(x), whole, rtol=0, atol=0)


def test_a_hook_can_change_the_latents_and_the_guard_stops_at_nan(pipe):
    pipe.scheduler.set_timesteps(3)
    x = pipe.prepare_latents(1, 2, 64, 64, torch.float32, "cpu", torch.Generator().manual_seed(0))
    context = torch.cat(pipe.encode_prompt("a", "cpu")[::-1])
    poison = lambda i, t, x, x0: x * float("nan") if i == 1 else x  # noqa: E731
    with pytest.raises(FloatingPointError, match="step 2 of 3"):
        pipe.denoise(x, context, hooks=[poison, FiniteWatch(3, 9.0)])


