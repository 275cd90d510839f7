"""Issue 16's promises: the public denoising loop, where weights come from (embedded names, the variant
rule, recommended settings), the frames<->batch fold, and attention capture."""

from __future__ import annotations

import inspect
import shutil
import warnings

import pytest
import torch

from t2vlab import TextToVideoPipeline, batch_to_frames, capture_attention, frames_to_batch
from t2vlab.guards import FiniteWatch
from t2vlab.weights import EMBEDDED, embedded_name, make_tiny_checkpoint, resolve_checkpoint, toy_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")  # float32 and the fp16 variant


@pytest.fixture(scope="module")
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


# ------------------------------------------------------------------------------ where weights come from
def test_fp16_of_the_toy_loads_and_casts_saying_so_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = TextToVideoPipeline.from_pretrained("toy", torch_dtype=torch.float16, variant="fp16")
    notes = [str(w.message) for w in caught if "variant" in str(w.message)]
    assert len(notes) == 1 and "'fp16'" in notes[0] and "casting" in notes[0]
    assert {m.dtype for m in pipe.models.values()} == {torch.float16}


def test_a_variant_is_picked_when_there_and_refused_when_others_exist(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fp16 files exist: no note
        pipe = TextToVideoPipeline.from_pretrained(tiny, torch_dtype=torch.float16, variant="fp16")
    assert pipe.unet.dtype == torch.float16
    with pytest.raises(FileNotFoundError, match="bf16.*fp16"):  # it has fp16 and plain: bf16 is a mistake
        TextToVideoPipeline.from_pretrained(tiny, variant="bf16")


def test_embedded_names_say_what_the_weights_are_and_the_old_names_still_work():
    assert set(EMBEDDED) == {"toy-trained", "tiny-random"}
    assert resolve_checkpoint("toy") == resolve_checkpoint("toy-trained") == toy_checkpoint()
    assert resolve_checkpoint("tiny") == resolve_checkpoint("tiny-random")
    assert embedded_name("toy") == embedded_name(toy_checkpoint()) == "toy-trained"
    assert embedded_name("tiny") == "tiny-random" and embedded_name("/nowhere") is None


def test_each_checkpoint_carries_its_recommended_settings(tiny, tmp_path):
    toy = TextToVideoPipeline.from_pretrained("toy").recommended
    assert (toy.height, toy.width, toy.num_frames, toy.scheduler) == (64, 64, 8, "dpm++")
    assert "red" in toy.prompt and "trained" in toy.description.lower()
    assert "random" in TextToVideoPipeline.from_pretrained("tiny-random").recommended.description.lower()
    folder = tmp_path / "mine"  # an unknown folder: the UNet's sample_size, the published frames and steps
    shutil.copytree(tiny, folder)
    rec = TextToVideoPipeline.from_pretrained(folder).recommended
    assert (rec.height, rec.width, rec.num_frames, rec.num_inference_steps) == (64, 64, 16, 25)


# --------------------------------------------------------------------------------- the denoising loop
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


# ------------------------------------------------------------------------------------------ the fold
def test_frames_fold_into_the_batch_frame_index_fastest():
    video = torch.arange(2 * 3 * 4 * 1 * 1.0).reshape(2, 3, 4, 1, 1)  # (B, C, F, H, W)
    images = frames_to_batch(video)
    assert images.shape == (8, 3, 1, 1)
    torch.testing.assert_close(images[5], video[1, :, 1])  # video 1, frame 1
    torch.testing.assert_close(batch_to_frames(images, 4), video)


# --------------------------------------------------------------------------------- attention capture
def test_capture_attention_records_every_map_and_leaves_the_model_as_it_was(pipe):
    unet = pipe.unet
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(x, 500, text)
        with capture_attention(unet) as maps:
            recorded = unet(x, 500, text)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)  # the written-out formula, same numbers
    assert len(maps.cross) == len(maps.cross_sizes) > 0 and len(maps.temporal) == len(maps.temporal_sizes) > 0
    for probs, (h, w) in zip(maps.cross, maps.cross_sizes):
        assert probs.shape[0] == 3 and probs.shape[2:] == (h * w, 77)
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    for probs, (h, w) in zip(maps.temporal, maps.temporal_sizes):
        assert probs.shape[0] == h * w and probs.shape[2:] == (3, 3)
    assert (8, 8) in maps.cross_sizes and (8, 8) in maps.temporal_sizes
    assert all(not m.keep_probs and m.last_probs is None for m in unet.attention_modules())
