"""DeepCache (t2vlab.techniques.deepcache): the step rule, the shallow path, and the switch.

Its cost in quality (the toy's evaluator, frame difference) and its speed are measured by
benchmarks/deepcache_cpu.py and recorded in docs/benchmarks.md, not asserted here.
"""

from __future__ import annotations

import pytest
import torch

from .helpers import tiny_pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=4)


def generate(pipe, steps=6, frames=3, seed=2):
    return pipe("a red circle", num_frames=frames, num_inference_steps=steps, height=64, width=64,
                generator=torch.Generator().manual_seed(seed), output_type="pt").frames


def test_cache_interval_1_is_the_plain_path_exactly(pipe):
    plain = generate(pipe)
    pipe.enable_deepcache(cache_interval=1)
    try:
        cached = generate(pipe)
        assert pipe.unet.deepcache.shallow_calls == 0
    finally:
        pipe.disable_deepcache()
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_the_shallow_path_on_a_fresh_cache_is_the_full_network(pipe, branch):
    """Right after a full call, the shallow path on the same inputs reads exactly the deep features that
    call computed, so it must give exactly its output: every level it runs, and the hand-over, are right."""
    unet = pipe.unet
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 77, unet.config.cross_attention_dim)
    unet.enable_deepcache(cache_interval=2, cache_branch=branch)
    try:
        with torch.no_grad():
            full = unet(x, 700, context)
            shallow = unet.deepcache.shallow_forward(unet, x, 700, context)
            later = unet(x, 600, context)  # the next step of the run: the shallow path, on 700's features
    finally:
        unet.disable_deepcache()
    torch.testing.assert_close(shallow, full, rtol=0, atol=0)
    with torch.no_grad():
        plain_later = unet(x, 600, context)
    assert (later - plain_later).abs().max() > 1e-4  # it did reuse: the deep features are 700's, not 600's


def test_the_step_rule_full_every_interval_and_each_run_starts_full(pipe):
    pipe.enable_deepcache(cache_interval=3)
    try:
        cache = pipe.unet.deepcache
        first = generate(pipe, steps=7)
        assert (cache.full_calls, cache.shallow_calls) == (3, 4)  # steps 0, 3, 6 full
        again = generate(pipe, steps=7)  # a new run: starts with a full call, not with the last run's features
        assert (cache.full_calls, cache.shallow_calls) == (6, 8)
        generate(pipe, steps=7, frames=2)  # another shape: the kept features are not used for it
        assert (cache.full_calls, cache.shallow_calls) == (9, 12)
    finally:
        pipe.disable_deepcache()
    assert torch.equal(first, again)
    plain = generate(pipe, steps=7)
    assert not torch.equal(first, plain)  # a cached run is a different (approximate) video
    assert (first - plain).abs().mean() < 0.2  # ... of the same kind (a broken hand-over gives unrelated frames)


def test_disable_restores_the_plain_network_and_removes_its_hook(pipe):
    plain = generate(pipe, steps=4)
    pipe.enable_deepcache(cache_interval=2, cache_branch=1)
    generate(pipe, steps=4)
    pipe.disable_deepcache()
    assert pipe.unet.deepcache is None
    assert all(not block._forward_pre_hooks for block in pipe.unet.up_blocks)
    assert torch.equal(generate(pipe, steps=4), plain)


@pytest.mark.parametrize("kwargs, message", [
    ({"cache_interval": 0}, "cache_interval must be a positive integer"),
    ({"cache_interval": 2.5}, "cache_interval must be a positive integer"),
    ({"cache_branch": 3}, r"cache_branch must be an integer in \[0, 2\], got 3 \(a level index"),
    ({"cache_branch": -1}, "cache_branch must be an integer in"),
])
def test_bad_settings_are_named(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe.enable_deepcache(**kwargs)
    assert pipe.unet.deepcache is None


def test_the_cli_switches_deepcache_on_and_says_so(tiny, tmp_path, capsys):
    from t2vlab.__main__ import main, parse_args
    from tests.helpers import exit_code

    assert parse_args(["p", "--deepcache"]).deepcache == 3 and parse_args(["p"]).deepcache is None
    out = tmp_path / "v.mp4"
    assert main(["a red circle", "--out", str(out), "--model", str(tiny), "--steps", "3", "--frames", "2",
                 "--deepcache", "2"]) == 0
    assert "DeepCache" in capsys.readouterr().out and out.exists()
    assert exit_code(main, ["x", "--out", str(tmp_path / "w.mp4"), "--model", str(tiny), "--deepcache", "0"]) == 2
    assert "argument --deepcache: must be a positive integer" in capsys.readouterr().err


def test_the_studio_switches_deepcache_and_compile_needs_a_gpu(pipe, tmp_path):
    from t2vlab.widgets import Studio
    from t2vlab.widgets.generation import Settings, configure

    studio = Studio(pipe, out_dir=tmp_path)
    studio.deepcache.value = 4
    assert studio.settings().deepcache == 4 and "DeepCache 4" in studio.settings().summary()
    scheduler = pipe.scheduler
    try:
        assert configure(pipe, Settings(scheduler="ddim", deepcache=3)) == []
        assert pipe.unet.deepcache.interval == 3
        if not torch.cuda.is_available():
            notes = configure(pipe, Settings(scheduler="ddim", compiled=True))
            assert notes == ["compile needs a GPU here (inductor's first call takes minutes on a CPU): ran eager"]
            assert pipe.compiled is None and pipe.unet.deepcache is None
    finally:
        pipe.disable_deepcache()
        pipe.scheduler = scheduler
