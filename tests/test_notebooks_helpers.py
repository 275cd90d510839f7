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


# the notebooks whose first cell installs from t2vlab.notebook.INSTALL_SOURCE (the course's first half; the others
# follow when they adopt INSTALL_CELL)
INSTALLING_NOTEBOOKS = ["00_quickstart", "01_text", "02_noise_and_schedules", "03_vae", "04_attention", "05_unet",
                        "06_pipeline"]


@pytest.mark.parametrize("name", INSTALLING_NOTEBOOKS)
def test_the_install_cell_is_the_one_install_source(name):
    """Each notebook's first code cell starts with INSTALL_CELL, so the install source is named in one place
    (a copy per notebook, held to it here), and the cell prints where the notebook sits on the learning path."""
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    first = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert first.startswith(nbh.INSTALL_CELL), f"{name}: the first code cell must start with notebook.INSTALL_CELL"
    assert nbh.INSTALL_SOURCE in nbh.INSTALL_CELL and f'about("{name[:2]}")' in first


def test_the_install_cell_installs_only_where_t2vlab_is_missing(tmp_path, monkeypatch):
    """Run the cell's code where t2vlab is importable: it installs nothing; in a clone's notebooks/ folder
    without an installed t2vlab: it puts the clone on sys.path instead of installing."""
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(nbh.INSTALL_CELL, {})
    assert calls == []
    clone = tmp_path / "clone"
    (clone / "t2vlab").mkdir(parents=True)
    (clone / "t2vlab" / "__init__.py").write_text("")
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    saved = list(sys.path)
    try:
        exec(nbh.INSTALL_CELL, {})
        assert sys.path[0] == str(clone) and calls == []
    finally:
        sys.path[:] = saved
    monkeypatch.chdir(tmp_path)  # no clone here: a fresh environment, so it installs from INSTALL_SOURCE
    exec(nbh.INSTALL_CELL, {})
    assert calls and calls[0][0][-1] == nbh.INSTALL_SOURCE


def test_the_learning_path_names_every_notebook_and_prints_its_place(capsys):
    from pathlib import Path

    from t2vlab.course.path import LEARNING_PATH, about, show_learning_path

    numbers = {p.name[:2] for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert numbers <= set(LEARNING_PATH), f"not in LEARNING_PATH: {sorted(numbers - set(LEARNING_PATH))}"
    for number, entry in LEARNING_PATH.items():
        assert entry["kind"] in ("core", "optional") and set(entry["prerequisites"]) <= set(LEARNING_PATH), number
        assert all(p < number for p in entry["prerequisites"]), f"{number} needs a later notebook"
    show_learning_path()
    about("00")
    out = capsys.readouterr().out
    assert "Quickstart" in out and "notebook 00 (core)" in out


def test_the_readme_course_table_is_the_learning_path():
    from pathlib import Path

    from t2vlab.course.path import readme_rows

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    missing = [row for row in readme_rows(root / "notebooks") if row not in readme.splitlines()]
    assert not missing, f"the README's course table differs from t2vlab.course.path: {missing[:2]}"
