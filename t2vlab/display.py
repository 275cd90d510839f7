"""Showing videos in a notebook: played inline (:func:`show_video`) or tiled into one image (:func:`frame_grid`).

Both take any video ``t2vlab.video`` accepts (arrays or tensors (F, H, W, 3), lists of frames or PIL images, the
pipeline's ``.frames`` holding one video); ``show_video`` also a path to an ``.mp4`` / ``.gif``.
"""

from __future__ import annotations

import base64
import math
import os
import tempfile

import numpy as np

from .checks import integer, positive_int
from .video import check_fps, export_to_video, extension, uint8_video

__all__ = ["show_video", "frame_grid"]


class _InlineHTML:
    """Stand-in for ``IPython.display.HTML`` when IPython is not installed."""

    def __init__(self, data: str):
        self.data = data

    def _repr_html_(self) -> str:
        return self.data


def _ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg  # imported here: the question is whether it works at all

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def _html_for_file(data: bytes, ext: str, width: int | None) -> str:
    size = f' width="{int(width)}"' if width else ""
    b64 = base64.b64encode(data).decode("ascii")
    if ext == ".mp4":
        return (
            f'<video autoplay loop muted playsinline controls{size} src="data:video/mp4;base64,{b64}">'
            "Your browser does not play inline MP4.</video>"
        )
    return f'<img{size} src="data:image/gif;base64,{b64}" alt="video">'


def show_video(frames_or_path, fps=8, *, width: int | None = None):
    """Play a video inline in a notebook.

    ``frames_or_path`` is a video (anything :func:`export_to_video` accepts) or the path of an ``.mp4`` / ``.gif``.
    Frames are encoded to MP4 and embedded as a base64 data URL in an autoplaying, looping, muted
    ``<video controls>`` element; without ffmpeg they are embedded as a GIF ``<img>`` instead. Returns an
    ``IPython.display.HTML`` object (or a minimal object with ``_repr_html_`` if IPython is missing).
    """
    if isinstance(frames_or_path, (str, os.PathLike)):
        path = os.fspath(frames_or_path)
        ext = extension(path, "frames_or_path")
        with open(path, "rb") as f:
            data = f.read()
    else:
        video = uint8_video(frames_or_path, "frames_or_path")
        fps = check_fps(fps)
        ext = ".mp4" if _ffmpeg_available() else ".gif"
        with tempfile.TemporaryDirectory(prefix="t2vlab-show-") as folder:  # encoded, read, and gone
            with open(export_to_video(video, os.path.join(folder, "video" + ext), fps), "rb") as f:
                data = f.read()
    html = _html_for_file(data, ext, width)
    try:
        from IPython.display import HTML  # optional: outside IPython a plain object does
    except ImportError:
        return _InlineHTML(html)
    return HTML(html)


def frame_grid(frames, nrow: int | None = None, *, padding: int = 2) -> np.ndarray:
    """Tile the frames of one video into a single ``uint8`` image ``(H', W', 3)``, row by row.

    ``nrow`` is the number of frames per row (as in torchvision's ``make_grid``); default ``ceil(sqrt(F))``.
    Frames are separated by ``padding`` white pixels; unused cells of the last row are white.
    """
    video = uint8_video(frames, "frames")
    count, h, w, _ = video.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(count))
    nrow, padding = positive_int("nrow", nrow), integer("padding", padding, low=0)
    cols = min(nrow, count)
    rows = math.ceil(count / cols)
    grid = np.full((rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(video):
        r, c = divmod(i, cols)
        y, x = r * (h + padding), c * (w + padding)
        grid[y : y + h, x : x + w] = frame
    return grid
