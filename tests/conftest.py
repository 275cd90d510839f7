"""Fixtures shared by the unit tests (tests/test_*.py) and the parity tests (tests/parity/).

Nothing here needs diffusers: fixtures written by a reference implementation live beside the parity
tests that use them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from t2vlab import TextToVideoPipeline
from t2vlab.schedulers import from_name
from t2vlab.tokenizer import Tokenizer
from t2vlab.toy import data as toy_data
from t2vlab.video import export_to_video
from t2vlab.weights import make_tiny_checkpoint


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``, as CI runs) each worker is one of several processes sharing the cores: one
    torch thread each, and ``OMP_NUM_THREADS=1`` for what it starts (accelerate launches, scripts, notebook
    kernels), unless the caller set ``OMP_NUM_THREADS``. Two workers each spinning two OpenMP threads on two
    cores wait for each other (see ``one_thread``)."""
    if hasattr(config, "workerinput"):
        threads = one_thread_unless_set()  # notebooks/conftest.py may have set it first
        torch.set_num_threads(int(threads))


def one_thread_unless_set() -> str:
    """``OMP_NUM_THREADS`` as the caller set it, or "1" when it is unset or not a count of threads: libgomp ignores
    an empty or malformed value ("Invalid value for environment variable OMP_NUM_THREADS") and starts a thread per
    core, so that every worker and kernel spins on every core (in a profile run with ``OMP_NUM_THREADS=``,
    notebook 09 took 183 s against 21 s on its own)."""
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not (threads.isdigit() and int(threads) > 0):
        threads = os.environ["OMP_NUM_THREADS"] = "1"
    return threads


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without xdist it is never called
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (CI's, the README's) hands out the longest files first (``tests/schedule.py``)."""
    if config.getoption("dist") == "loadfile":
        from tests.schedule import LongestFirst

        return LongestFirst(config, log)
    return None


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny checkpoint in the published layout (random weights) with its fp16 variant. Tests copy it
    before changing anything; a module that needs a different one defines its own ``tiny``."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tok():
    """The CLIP tokenizer with its real vocabulary."""
    return Tokenizer.default()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's duration (``pytestmark = pytest.mark.usefixtures("one_thread")``).
    Tiny tensors gain nothing from threads, and on a shared 2-core machine two OpenMP threads spinning
    against other jobs made one call 40x slower (12 s against 0.3 s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache folder that huggingface_hub reads, offline (HF_HUB_OFFLINE=1): what a test lays out
    in it with ``tests.helpers.hub_cache`` is what a download would have left; the Hub itself is never reached."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four captioned toy clips of 8 frames: a folder of frames, .gif and .mp4 files (the fine-tuning
    trainer's data in tests/test_finetune.py and tests/test_motion_director.py)."""
    folder = tmp_path_factory.mktemp("clips")
    videos, labels = toy_data.make_clips(4, seed=0)
    for i, (video, caption) in enumerate(zip(videos.numpy(), toy_data.captions(labels))):
        if i == 0:
            (folder / "c0").mkdir()
            for j, frame in enumerate(video):
                Image.fromarray((frame * 255).round().astype(np.uint8)).save(folder / "c0" / f"{j:02d}.png")
        else:
            export_to_video(video, str(folder / f"c{i}.{'mp4' if i == 2 else 'gif'}"))
        (folder / f"c{i}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def toy():
    """The trained toy pipeline with DPM-Solver++ and no progress bar, one per test module (tests change its state)."""
    p = TextToVideoPipeline.from_pretrained("toy")
    p.scheduler = from_name("dpm++", p.scheduler.config)
    p.set_progress_bar_config(disable=True)
    return p
