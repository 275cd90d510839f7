"""t2vlab.notebook: the first cell's choices and the helpers the notebooks share."""

import os
import sys

import numpy as np
import pytest
import torch

from t2vlab import notebook as nbh


def test_checkpoint_follows_the_environment_variable_first():
    assert nbh.choose_checkpoint(cuda=False, environ={}) == "toy"
    assert nbh.choose_checkpoint(cuda=True, environ={}) == "damo-vilab/text-to-video-ms-1.7b"
    assert nbh.choose_checkpoint(cuda=False, environ={"T2VLAB_CHECKPOINT": "/ckpt/ms"}) == "/ckpt/ms"
    assert nbh.choose_checkpoint(cuda=True, environ={"T2VLAB_CHECKPOINT": "tiny"}) == "tiny"
    assert nbh.choose_checkpoint(cuda=True, environ={"T2VLAB_CHECKPOINT": "  "}) == "damo-vilab/text-to-video-ms-1.7b"


def test_setup_on_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("T2VLAB_CHECKPOINT", raising=False)
    env = nbh.setup()
    assert (env.device, env.dtype, env.checkpoint) == ("cpu", torch.float32, "toy")
    assert "trained" in env.description.lower()
    assert "checkpoint: toy" in capsys.readouterr().out


def test_setup_with_a_gpu_and_with_the_variable(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("T2VLAB_CHECKPOINT", raising=False)
    env = nbh.setup(quiet=True)
    assert (env.device, env.dtype) == ("cuda", torch.float16)
    assert env.checkpoint == "damo-vilab/text-to-video-ms-1.7b" and "3.6 GB" in env.description
    monkeypatch.setenv("T2VLAB_CHECKPOINT", str(tmp_path))
    env = nbh.setup(quiet=True)
    assert env.checkpoint == str(tmp_path) and "folder" in env.description


def test_on_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not nbh.on_colab()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-x")
    assert nbh.on_colab()


def test_show_source_prints_the_package_code_outside_ipython(capsys):
    nbh.show_source(nbh.choose_checkpoint)
    out = capsys.readouterr().out
    assert "t2vlab/notebook.py:" in out and "def choose_checkpoint" in out


def test_sample_image_and_to_image():
    img = nbh.sample_image(32)
    assert img.shape == (3, 32, 32) and img.min() >= -1 and img.max() <= 1 and img.std() > 0.1
    arr = nbh.to_image(img)
    assert arr.shape == (32, 32, 3) and arr.min() >= 0 and arr.max() <= 1
    assert nbh.to_image(torch.rand(5, 5, 3)).shape == (5, 5, 3)


def _linux_with_glibc():
    """peak_memory on CPU resets the resident high-water mark through /proc/self/clear_refs, reads it from
    /proc/self/status and hands freed heap pages back with glibc's malloc_trim: Linux with glibc (CI) only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))  # e.g. "glibc 2.36"; unknown name on musl
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not _linux_with_glibc(), reason="CPU peak memory is measured on Linux with glibc only "
                                                    "(/proc/self/clear_refs, /proc/self/status, malloc_trim)")
def test_peak_memory_sees_an_allocation():
    kept = []
    peak = nbh.peak_memory(lambda: kept.append(torch.ones(8, 2**20)))  # 32 MiB
    assert peak is not None, "peak_memory measured nothing on Linux"
    assert 28 * 2**20 <= peak <= 64 * 2**20, f"{peak / 2**20:.1f} MiB for a 32 MiB tensor"


def test_film_strip_puts_the_frames_side_by_side_with_gaps():
    video = torch.rand(3, 5, 4, 3)                        # (F, H, W, 3)
    strip = nbh.film_strip(video, gap=2, fill=1.0)
    assert strip.shape == (5, 3 * 4 + 2 * 2, 3)
    for f in range(3):                                    # frame f starts at f * (W + gap)
        assert np.array_equal(strip[:, f * 6:f * 6 + 4], video[f].numpy())
    assert (strip[:, 4:6] == 1.0).all() and (strip[:, 10:12] == 1.0).all()
    maps = np.random.rand(2, 5, 4)                        # (F, H, W), e.g. attention maps
    assert np.isnan(nbh.film_strip(maps, fill=float("nan"))[:, 4:6]).all()


def test_show_frames_draws_one_titled_tile_per_frame_in_both_layouts():
    import matplotlib.pyplot as plt

    video = torch.rand(5, 8, 12, 3)  # (F, H, W, 3) in [0, 1], as decode_video gives one video
    for frames in (video, video.permute(3, 0, 1, 2) * 2 - 1):  # and (C, F, H, W) in [-1, 1]
        fig = nbh.show_frames(frames, ncols=3, title="five frames")
        drawn = [ax for ax in fig.axes if ax.images]
        assert [ax.get_title() for ax in drawn] == [f"frame {i}" for i in range(5)]
        assert len(fig.axes) == 6 and fig._suptitle.get_text() == "five frames"  # 2 rows of 3, one tile empty
        np.testing.assert_allclose(drawn[4].images[0].get_array(), video[4].numpy(), atol=1e-6)  # (2x-1)/2+0.5 rounding
        plt.close(fig)
