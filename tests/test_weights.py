"""Where weights come from (t2vlab.weights): the embedded checkpoints' names, the variant rule, and each
checkpoint's recommended settings."""

from __future__ import annotations

import shutil
import threading
import time
import warnings

import pytest
import torch

from t2vlab import TextToVideoPipeline, atomic, weights
from t2vlab.weights import EMBEDDED, embedded_name, resolve_checkpoint, toy_checkpoint


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


def test_the_tiny_checkpoint_asked_for_at_once_is_built_once_and_whole(tmp_path, monkeypatch, tok):
    """``pytest -n 2`` workers (or two notebooks) on an empty cache ask for "tiny" at the same moment: one builds
    it, the other waits for the lock beside it and uses that folder; nothing half-built is seen or left."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("T2VLAB_CACHE", str(cache))
    real, built, start = weights.make_tiny_checkpoint, [], threading.Barrier(2)

    def build(path, **kw):
        built.append(path)
        time.sleep(0.5)  # the other has asked by now: without the lock it would build its own copy
        return real(path, **{**kw, "variants": (None,)})

    monkeypatch.setattr(weights, "make_tiny_checkpoint", build)
    got, errors = [], []

    def ask():
        start.wait()
        try:
            got.append(weights.tiny_checkpoint())
        except BaseException as e:  # noqa: B036 - reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(2)]  # flock holds between two opens in one process too
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(got) == 2 and got[0] == got[1] == cache / "tiny-seed0"
    assert len(built) == 1, "both built the checkpoint: the second did not wait for the first"
    assert sorted(p.name for p in cache.iterdir()) == [".tiny-seed0.lock", "tiny-seed0"]  # no leftover
    assert atomic.leftovers(cache) == []
    assert TextToVideoPipeline.from_pretrained("tiny").unet is not None
