"""Figures for the widgets: matplotlib ``Figure`` objects made without pyplot (so a notebook never shows
them by accident), turned into PNG bytes for an ``ipywidgets.Image``; and the sample picture."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

from ..notebook import sample_image


def new_figure(width, height):
    """A matplotlib Figure that is not registered with pyplot (so notebooks don't display it by themselves)."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def sample_picture(size=128):
    """Grace Hopper's portrait (it ships with matplotlib), (3, size, size) float32 in [-1, 1]: the value
    range the diffusion model works in (``t2vlab.notebook.sample_image``)."""
    return sample_image(size)


def to_rgb(x):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return (x.detach().float().cpu().permute(1, 2, 0) / 2 + 0.5).clamp(0, 1).numpy()
