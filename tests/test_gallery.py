"""tools/gallery.py renders figures as small PNGs with their page; the committed gallery is complete."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from t2vlab import atomic
from tests.helpers import load_file_module

from .helpers import fails_half_way

ROOT = Path(__file__).resolve().parents[1]


def load_gallery():
    return load_file_module(ROOT / "tools" / "gallery.py", "gallery")


def test_gallery_renders_a_reduced_set(tmp_path):
    gallery = load_gallery()
    only = ["noising", "training", "correlation"]  # the quick ones: a few seconds on a CPU
    paths = gallery.render(tmp_path, only=only)
    page = (tmp_path / "gallery.md").read_text()
    for name, path in zip(only, paths):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert 1_000 < path.stat().st_size < 100_000, (path, path.stat().st_size)  # a picture, and small
        assert f"](gallery/{name}.png)" in page
    assert not atomic.leftovers(tmp_path) and not atomic.leftovers(tmp_path / "gallery")  # nothing left behind


def test_an_interrupted_png_leaves_the_old_one_and_nothing_else(tmp_path, monkeypatch):
    gallery = load_gallery()
    path = tmp_path / "figure.png"
    path.write_bytes(b"the old picture")
    fig = gallery.plt.figure(figsize=(1, 1))
    real, fail = gallery.Image.Image.save, fails_half_way()
    monkeypatch.setattr(gallery.Image.Image, "save",  # matplotlib's own save into memory still works
                        lambda self, fp, *a, **k: (real if isinstance(fp, io.BytesIO) else fail)(self, fp, *a, **k))
    with pytest.raises(OSError, match="injected"):
        gallery.save_png(fig, path)
    assert path.read_bytes() == b"the old picture" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_committed_gallery_is_complete_and_small():
    gallery = load_gallery()
    page = (ROOT / "docs" / "gallery.md").read_text()
    linked = re.findall(r"\]\(gallery/(\w+)\.png\)", page)
    assert linked == list(gallery.FIGURES), linked  # every figure, in order: regenerated after a change
    sizes = [(ROOT / "docs" / "gallery" / f"{n}.png").stat().st_size for n in linked]
    assert sum(sizes) < 2 * 2**20, sizes  # learners clone the repository
    assert "docs/gallery.md" in (ROOT / "README.md").read_text()
