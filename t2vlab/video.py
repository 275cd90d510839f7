"""Saving, reading and showing generated videos.

The pipeline hands back frames as RGB pixels; this module turns them into files people can open:

* :func:`export_to_video` writes an ``.mp4`` (H.264, yuv420p, plays in browsers and QuickTime) or a looping
  ``.gif``. The write is atomic: the file is encoded next to the target under a temporary name and moved into
  place only when complete, so an error or Ctrl-C never leaves a truncated video behind.
* :func:`read_video` reads a file back as a ``uint8`` array ``(F, H, W, 3)``.
* :func:`frame_grid` tiles the frames of a video into one image (for notebooks and docs).
* :func:`show_video` plays a video inline in a notebook.
* :func:`to_uint8` converts float pixels in ``[0, 1]`` to ``uint8``.
* :func:`video_input` and :func:`image_input` turn what people pass to video-to-video (``video=``) and
  image-to-video (``image=``) into float pixels in ``[0, 1]`` (see the section at the end of the module).

Accepted video inputs (``video_frames`` / ``frames`` below):

* one video as a NumPy array or torch tensor ``(F, H, W, C)``;
* a list (or tuple) of frames, each an ``(H, W, C)`` array/tensor or a PIL image (this is what diffusers'
  ``export_to_video`` takes, float frames in ``[0, 1]`` included);
* the pipeline's ``.frames`` as returned: an array ``(B, F, H, W, C)`` or a list of per-video arrays/frame lists.
  With exactly one video it is used; with several a ``ValueError`` asks you to pick one (``frames[i]``).

Pixels are ``uint8`` (0-255), another integer type with values in 0-255, or float in ``[0, 1]``. Floats slightly
outside ``[0, 1]`` (an unclamped decode) are clipped; floats far outside it (below -0.5 or above 1.5) are rejected,
since they almost certainly mean a ``[-1, 1]`` or ``[0, 255]`` convention that clipping would silently ruin.
``C`` is 3 (RGB) or 1 (grey, repeated to RGB). 4 channels (RGBA) are rejected rather than guessing how to treat
alpha: drop it with ``frames[..., :3]``. PIL images are converted with ``.convert("RGB")``.
"""

from __future__ import annotations

import base64
import math
import os
import sys
import tempfile

import numpy as np

__all__ = ["export_to_video", "read_video", "frame_grid", "show_video", "to_uint8", "video_input", "image_input"]

SUPPORTED_EXTENSIONS = (".mp4", ".gif")

# x264 constant rate factor: 0 is lossless, 23 is x264's default, ~18 is commonly called "visually lossless".
# Generated videos are small (256x256, 16 frames), so the larger file is cheap and compression artefacts on
# fine detail are what users would otherwise notice.
MP4_CRF = 18

# Floats outside [0, 1] by more than this are treated as a wrong value convention, not decoder overshoot.
_FLOAT_RANGE_SLACK = 0.5


# --------------------------------------------------------------------------------------------- input handling


def to_uint8(frames, name: str = "to_uint8") -> np.ndarray:
    """Convert pixels to ``uint8``: floats in ``[0, 1]`` are scaled by 255, rounded to nearest and clipped.

    Works on any shape (a frame, a video, a batch). ``uint8`` input is returned unchanged; other integer types
    must already hold values in 0-255. NaN or infinite values raise ``ValueError``. Errors start with ``name``
    (the caller's argument).
    """
    arr = _to_numpy(frames)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: expected uint8, integer or float pixels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"{name}: integer pixels must lie in 0..255, got range [{arr.min()}, {arr.max()}] ({arr.dtype})"
            )
        return arr.astype(np.uint8)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: pixels contain NaN or infinite values")
    return np.rint(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to check a type
    return torch is not None and isinstance(x, torch.Tensor)


def _is_pil(x) -> bool:
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(x, pil_image.Image)


def _to_numpy(x) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # NumPy has no bfloat16
        return x.numpy()
    if _is_pil(x):
        return np.asarray(x.convert("RGB"))
    return np.asarray(x)


def _check_pixels(arr: np.ndarray, name: str) -> np.ndarray:
    """Validate dtype and value range of an ``(..., H, W, C)`` array and return it as uint8 RGB."""
    shape = tuple(arr.shape)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: expected uint8 or float pixels, got dtype {arr.dtype} with shape {shape}")
    channels = shape[-1]
    if channels not in (1, 3):
        hint = ""
        if channels == 4:
            hint = " 4 channels looks like RGBA: drop alpha with frames[..., :3]."
        elif len(shape) >= 3 and shape[-3] in (1, 3):
            hint = " This looks channels-first (C, H, W): move channels last, e.g. tensor.permute(0, 2, 3, 1)."
        raise ValueError(f"{name}: expected 3 (RGB) or 1 (grey) channels last, got shape {shape}.{hint}")
    if arr.size == 0:
        raise ValueError(f"{name}: the video is empty (shape {shape})")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: pixels contain NaN or infinite values (shape {shape})")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_FLOAT_RANGE_SLACK or hi > 1 + _FLOAT_RANGE_SLACK:
            raise ValueError(
                f"{name}: float pixels must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]. "
                "For [-1, 1] use (x + 1) / 2; for 0-255 values cast to uint8."
            )
    arr = to_uint8(arr, name) if arr.dtype != np.uint8 else arr
    if channels == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def _pick_single_video(count: int, name: str) -> None:
    if count == 0:
        raise ValueError(f"{name}: got an empty batch of videos")
    if count > 1:
        raise ValueError(
            f"{name}: got a batch of {count} videos; export one at a time by picking it, e.g. frames[i] "
            f"for i in range({count})"
        )


def _as_video(video_frames, name: str = "video_frames") -> np.ndarray:
    """Normalise any accepted input to a C-contiguous ``uint8`` array ``(F, H, W, 3)``."""
    if isinstance(video_frames, (list, tuple)):
        if len(video_frames) == 0:
            raise ValueError(f"{name}: the video is empty (got an empty {type(video_frames).__name__})")
        first = video_frames[0]
        is_batch = isinstance(first, (list, tuple)) or (
            (isinstance(first, np.ndarray) or _is_tensor(first)) and first.ndim == 4
        )
        if is_batch:  # the pipeline's .frames as a list of videos
            _pick_single_video(len(video_frames), name)
            return _as_video(first, name)
        frames = []
        for i, frame in enumerate(video_frames):
            if not (isinstance(frame, np.ndarray) or _is_tensor(frame) or _is_pil(frame)):
                raise TypeError(
                    f"{name}[{i}]: expected a frame as a NumPy array, torch tensor or PIL image, "
                    f"got {type(frame).__name__}"
                )
            arr = _to_numpy(frame)
            if arr.ndim != 3:
                raise ValueError(f"{name}[{i}]: expected a frame of shape (H, W, 3), got shape {tuple(arr.shape)}")
            arr = _check_pixels(arr, f"{name}[{i}]")
            if frames and arr.shape != frames[0].shape:
                raise ValueError(
                    f"{name}[{i}]: all frames must have the same size, got {arr.shape[:2]} "
                    f"after {frames[0].shape[:2]} for {name}[0]"
                )
            frames.append(arr)
        return np.ascontiguousarray(np.stack(frames))

    if not (isinstance(video_frames, np.ndarray) or _is_tensor(video_frames)):
        raise TypeError(
            f"{name}: expected a NumPy array, torch tensor or list of frames, got {type(video_frames).__name__}"
        )
    arr = _to_numpy(video_frames)
    if arr.ndim == 5:  # (B, F, H, W, C): the pipeline's .frames as an array
        _pick_single_video(arr.shape[0], name)
        arr = arr[0]
    if arr.ndim != 4:
        hint = " For a single frame use frame[None]." if arr.ndim == 3 else ""
        raise ValueError(f"{name}: expected a video of shape (F, H, W, 3), got shape {tuple(arr.shape)}.{hint}")
    return np.ascontiguousarray(_check_pixels(arr, name))


def _check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
        raise TypeError(f"fps: expected a number, got {type(fps).__name__}")
    if not math.isfinite(fps) or not 1e-3 <= fps <= 1000:
        raise ValueError(f"fps: must be a number from 0.001 to 1000 frames per second, got {fps}")
    return float(fps)


def _extension(path: str, name: str = "output_video_path") -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"{name}: unsupported extension {ext or '(none)'!r} in {path!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return ext


# ---------------------------------------------------------------------------------------------------- writers


def _pad_to_even(video: np.ndarray) -> np.ndarray:
    """yuv420p stores colour at half resolution, so H.264 needs even sizes: repeat the last row/column if odd.

    Padding (rather than letting ffmpeg rescale, imageio's default) keeps every pixel exactly where it was;
    the file is at most one pixel wider/taller.
    """
    _, h, w, _ = video.shape
    if h % 2 == 0 and w % 2 == 0:
        return video
    return np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_mp4(path: str, video: np.ndarray, fps: float) -> None:
    import imageio_ffmpeg  # imported here: it looks for the ffmpeg binary, needed for mp4 only

    video = np.ascontiguousarray(_pad_to_even(video))
    _, h, w, _ = video.shape
    writer = imageio_ffmpeg.write_frames(
        path,
        (w, h),
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        fps=fps,
        codec="libx264",
        quality=None,  # we set the rate factor ourselves below
        macro_block_size=1,  # sizes are already even; never let imageio rescale
        output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart"],  # faststart: playable while loading
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in video:
            writer.send(frame)
    finally:
        writer.close()  # waits for ffmpeg to finish the file (or to stop, on error)


def _gif_frame_ms(fps: float) -> int:
    # GIF stores delays in 1/100 s. Below 2/100 s many viewers fall back to 1/10 s, so cap at 50 fps.
    return max(2, round(100.0 / fps)) * 10


def _write_gif(path: str, video: np.ndarray, fps: float) -> None:
    from PIL import Image  # imported here: only GIFs need it

    images = [Image.fromarray(frame) for frame in video]
    # Each frame gets its own 256-colour palette (Pillow's adaptive quantisation). Pillow merges identical
    # consecutive frames into one longer frame, so playback timing is kept but the frame count can drop.
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_gif_frame_ms(fps),
        loop=0,  # loop forever
    )


_WRITERS = {".mp4": _write_mp4, ".gif": _write_gif}


def _new_file_mode() -> int:
    """Permissions a normally created file would get (mkstemp makes 0o600 files)."""
    try:  # Linux: read the umask without changing it (os.umask would briefly change it for every thread)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def export_to_video(video_frames, output_video_path=None, fps=8, *, overwrite: bool = False) -> str:
    """Write a video to ``output_video_path`` (``.mp4`` or ``.gif``) and return the path as a ``str``.

    Args:
        video_frames: one video (see the module docstring for accepted forms: arrays/tensors ``(F, H, W, 3)``,
            lists of frames or PIL images, or the pipeline's ``.frames`` holding exactly one video).
        output_video_path: target file; the extension picks the format. ``None`` writes a new temporary
            ``.mp4`` (``tempfile.mkstemp``) and returns its path.
        fps: frames per second, a finite number > 0. GIF delays are stored in 1/100 s, so GIF timing is
            rounded to 10 ms and capped at 50 fps.
        overwrite: replace an existing file at the target; by default an existing file is never touched
            (``FileExistsError``).

    MP4 is H.264 in yuv420p at CRF 18; odd heights/widths get their last row/column repeated once (H.264 in
    yuv420p needs even sizes), nothing is rescaled. The file appears at the target only once fully written.
    """
    video = _as_video(video_frames)
    fps = _check_fps(fps)

    if output_video_path is None:
        fd, target = tempfile.mkstemp(suffix=".mp4")
        os.close(fd)
        overwrite = True  # we just created the (empty) file ourselves
    else:
        if not isinstance(output_video_path, (str, os.PathLike)):
            raise TypeError(f"output_video_path: expected a str or path, got {type(output_video_path).__name__}")
        target = os.fspath(output_video_path)
        if isinstance(target, bytes):
            target = os.fsdecode(target)
    ext = _extension(target)
    if os.path.isdir(target):
        raise IsADirectoryError(f"output_video_path: {target!r} is a directory")
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"output_video_path: {target!r} exists; pass overwrite=True to replace it")

    folder = os.path.dirname(os.path.abspath(target))
    stem = os.path.basename(target)
    # Same folder as the target, so the final os.replace is a rename on one filesystem (atomic). Same extension,
    # so ffmpeg picks the right container.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=f".part{ext}")
    os.close(fd)
    try:
        _WRITERS[ext](tmp, video, fps)
        if not os.path.getsize(tmp):
            raise RuntimeError(f"writing {target!r} produced an empty file")
        if output_video_path is not None:
            os.chmod(tmp, _new_file_mode())
        if overwrite:
            os.replace(tmp, target)
        else:
            _move_no_clobber(tmp, target)
    except BaseException:  # includes KeyboardInterrupt: never leave the partial file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def _move_no_clobber(tmp: str, target: str) -> None:
    # os.link fails if target exists, closing the race between our early check and the move.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(f"output_video_path: {target!r} exists; pass overwrite=True to replace it") from None
    except OSError:  # filesystem without hard links: best effort
        if os.path.lexists(target):
            raise FileExistsError(f"output_video_path: {target!r} exists; pass overwrite=True to replace it") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


# ---------------------------------------------------------------------------------------------------- reading


def read_video(path) -> np.ndarray:
    """Read an ``.mp4`` or ``.gif`` as a ``uint8`` array ``(F, H, W, 3)`` (via imageio)."""
    import imageio.v3 as iio  # imported here: only reading needs it, and it is slow to import

    path = os.fspath(path)
    ext = _extension(path, "path")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r}")
    if ext == ".gif":
        # mode="RGB": composite each frame over the previous ones (GIF frames may be partial) and drop the palette.
        return np.asarray(iio.imread(path, index=None, plugin="pillow", mode="RGB"))
    return np.asarray(iio.imread(path, index=None, plugin="FFMPEG"))


# ----------------------------------------------------------------------------------------------- notebook help


def frame_grid(frames, nrow: int | None = None, *, padding: int = 2) -> np.ndarray:
    """Tile the frames of one video into a single ``uint8`` image ``(H', W', 3)``, row by row.

    ``nrow`` is the number of frames per row (as in torchvision's ``make_grid``); default ``ceil(sqrt(F))``.
    Frames are separated by ``padding`` white pixels; unused cells of the last row are white.
    """
    video = _as_video(frames, "frames")
    count, h, w, _ = video.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(count))
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow: expected a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding: expected an int >= 0, got {padding!r}")
    cols = min(int(nrow), count)
    rows = math.ceil(count / cols)
    grid = np.full((rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(video):
        r, c = divmod(i, cols)
        y, x = r * (h + padding), c * (w + padding)
        grid[y : y + h, x : x + w] = frame
    return grid


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
        ext = _extension(path, "frames_or_path")
        with open(path, "rb") as f:
            data = f.read()
    else:
        video = _as_video(frames_or_path, "frames_or_path")
        fps = _check_fps(fps)
        ext = ".mp4" if _ffmpeg_available() else ".gif"
        fd, tmp = tempfile.mkstemp(suffix=ext)
        os.close(fd)
        try:
            export_to_video(video, tmp, fps, overwrite=True)  # our own empty temporary file
            with open(tmp, "rb") as f:
                data = f.read()
        finally:
            os.unlink(tmp)
    html = _html_for_file(data, ext, width)
    try:
        from IPython.display import HTML  # optional: outside IPython a plain object does
    except ImportError:
        return _InlineHTML(html)
    return HTML(html)


# ------------------------------------------------------------------------------------------ pipeline inputs
# What people pass to video-to-video (``video=``) and image-to-video (``image=``), made into float32 pixels in
# [0, 1], channels last. Unlike ``export_to_video`` (which writes 8-bit files) these keep float input as it is,
# so a float video gives the same numbers as the reference pipeline. Rules, each a ValueError naming the argument:
# RGB only (grey and RGBA are refused, not guessed), pixels uint8 or float in [0, 1], frames of one size.

def _pil_rgb(img, name):
    """A PIL image as (H, W, 3) uint8; grey and alpha modes are refused (converting them would be a guess)."""
    if img.mode in ("L", "LA", "1", "I", "I;16", "F") or img.mode.startswith("I;"):
        raise ValueError(f"{name}: a grey-scale image (PIL mode {img.mode!r}); the model wants RGB: pass "
                         f"image.convert('RGB') if grey is what you mean")
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        raise ValueError(f"{name}: an image with an alpha channel (PIL mode {img.mode!r}); the model wants RGB: "
                         f"drop or composite the alpha first, e.g. image.convert('RGB')")
    return np.asarray(img.convert("RGB"))


def _as_rgb_float(arr, name) -> np.ndarray:
    """(..., H, W, 3) pixels, uint8 (0-255) or float in [0, 1] -> float32 in [0, 1]."""
    shape = tuple(arr.shape)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: expected uint8 or float pixels, got dtype {arr.dtype} with shape {shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: the video is empty (shape {shape})")
    channels = shape[-1]
    if channels == 1:
        raise ValueError(f"{name}: grey-scale pixels (1 channel, shape {shape}); the model wants RGB: repeat the "
                         f"channel, e.g. np.repeat(x, 3, axis=-1)")
    if channels == 4:
        raise ValueError(f"{name}: RGBA pixels (4 channels, shape {shape}); the model wants RGB: drop or composite "
                         f"the alpha first, e.g. x[..., :3]")
    if channels != 3:
        hint = (" This looks channels-first: move the channels last, e.g. x.permute(0, 2, 3, 1)."
                if len(shape) >= 3 and shape[-3] == 3 else "")
        raise ValueError(f"{name}: expected RGB pixels with 3 channels last, got shape {shape}.{hint}")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{name}: integer pixels must lie in 0..255, got [{lo}, {hi}] ({arr.dtype})")
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: pixels contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name}: float pixels must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]. "
                         "For [-1, 1] use (x + 1) / 2; for 0-255 values cast to uint8.")
    return arr


def _read_video_file(path, name) -> np.ndarray:
    """Any video file imageio reads: .gif through Pillow (frames composited, RGB), the rest through ffmpeg."""
    import imageio.v3 as iio  # imported here: only reading a file needs it, and it is slow to import

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no such file {path!r}")
    try:
        if os.path.splitext(path)[1].lower() == ".gif":
            frames = iio.imread(path, index=None, plugin="pillow", mode="RGB")
        else:
            frames = iio.imread(path, index=None, plugin="FFMPEG")
    except Exception as e:  # imageio raises many kinds (OSError, ValueError, its own) for a file it cannot read
        raise ValueError(f"{name}: cannot read {path!r} as a video ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a still image (one frame)
        frames = frames[None]
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"{name}: {path!r} holds no frames (read shape {frames.shape})")
    return frames


def _frame_array(frame, name) -> np.ndarray:
    if _is_pil(frame):
        return _pil_rgb(frame, name)
    if isinstance(frame, np.ndarray) or _is_tensor(frame):
        return _to_numpy(frame)
    raise ValueError(f"{name}: expected a frame as a NumPy array, torch tensor or PIL image, "
                     f"got {type(frame).__name__}")


def _one_video(video, name) -> np.ndarray:
    """One video in any accepted form -> float32 (F, H, W, 3) in [0, 1]."""
    if isinstance(video, (str, os.PathLike)):
        arr = _read_video_file(os.fspath(video), name)
    elif isinstance(video, (list, tuple)):
        if len(video) == 0:
            raise ValueError(f"{name}: the video is empty (an empty {type(video).__name__} of frames)")
        frames = []
        for i, frame in enumerate(video):
            arr = _frame_array(frame, f"{name}[{i}]")
            if arr.ndim != 3:
                raise ValueError(f"{name}[{i}]: expected a frame (H, W, 3), got shape {tuple(arr.shape)}")
            if frames and arr.shape[:2] != frames[0].shape[:2]:
                raise ValueError(f"{name}[{i}]: all frames must have one size; this one is {arr.shape[0]}x"
                                 f"{arr.shape[1]} (height x width), {name}[0] is {frames[0].shape[0]}x"
                                 f"{frames[0].shape[1]}")
            frames.append(_as_rgb_float(arr, f"{name}[{i}]"))
        return np.stack(frames)
    elif isinstance(video, np.ndarray) or _is_tensor(video):
        arr = _to_numpy(video)
        if arr.ndim != 4:
            hint = " For a single frame use x[None]." if arr.ndim == 3 else ""
            raise ValueError(f"{name}: expected a video (frames, height, width, 3), got shape {tuple(arr.shape)}."
                             f"{hint}")
    else:
        raise ValueError(f"{name}: expected a list of frames, an array or tensor (frames, height, width, 3) or a "
                         f"path to a video file, got {type(video).__name__}")
    if len(arr) == 0:
        raise ValueError(f"{name}: the video is empty (shape {tuple(arr.shape)})")
    return _as_rgb_float(arr, name)


def frames_last(video, name: str = "video"):
    """A video array or tensor with its colour channels last: diffusers' channels-first video tensors, one video
    (F, 3, H, W) or a batch (B, F, 3, H, W) (or a list of (F, 3, H, W)), become (F, H, W, 3) / (B, F, H, W, 3).

    Told apart by which axis has 3 entries: the channel axis of the channels-first layout (axis 1 of one video,
    2 of a batch) or the last axis. Last axis 3, channel axis not: channels last already, returned as it is.
    Channel axis 3, last axis not: channels first, moved last. Both 3 (frames 3 pixels high, or 3 wide): either
    layout fits, so it is refused naming the shape. Neither: returned as it is, for the reader to refuse (grey,
    RGBA and other channel counts have their own messages). Anything else (files, lists of frames, PIL images)
    is returned as it is.
    """
    if isinstance(video, (list, tuple)):
        return type(video)(frames_last(v, f"{name}[{i}]") if _is_array(v) and v.ndim == 4 else v
                           for i, v in enumerate(video))
    if not (_is_array(video) and video.ndim in (4, 5)):
        return video
    channel_axis = video.ndim - 3  # (F, C, H, W) or (B, F, C, H, W)
    first, last = video.shape[channel_axis] == 3, video.shape[-1] == 3
    if first and last:
        raise ValueError(f"{name}: shape {tuple(video.shape)} reads both as channels last (..., H, W, 3), frames 3 "
                         f"pixels high, and as channels first (..., 3, H, W), frames 3 pixels wide; the layout cannot "
                         f"be told (frames for the model are at least 8 pixels a side)")
    if not first:
        return video
    order = (*range(channel_axis), *range(channel_axis + 1, video.ndim), channel_axis)  # channels to the end
    return video.permute(*order) if _is_tensor(video) else video.transpose(order)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or _is_tensor(v)


def video_input(video, name: str = "video") -> np.ndarray:
    """What a user passes as a video -> float32 pixels (videos, frames, height, width, 3) in [0, 1].

    One video: a list of frames (arrays or tensors (H, W, 3), PIL images), an array or tensor
    (F, H, W, 3) (uint8, or float in [0, 1]), or a path to a video file (.mp4, .gif, whatever imageio
    reads). Several videos: an array or tensor (B, F, H, W, 3), such as a pipeline's ``.frames``, or a
    list of videos. Arrays and tensors may also come channels first, as diffusers' video tensors do ((F, 3, H, W),
    (B, F, 3, H, W); told apart by ``frames_last``). Grey-scale, RGBA, mixed frame sizes, empty videos and
    unreadable files are refused with a ValueError (FileNotFoundError for a missing file) naming ``name``.
    """
    video = frames_last(video, name)
    if (isinstance(video, np.ndarray) or _is_tensor(video)) and video.ndim == 5:
        if video.shape[0] == 0:
            raise ValueError(f"{name}: an empty batch of videos (shape {tuple(video.shape)})")
        videos = [_one_video(v, f"{name}[{i}]") for i, v in enumerate(video)]
    elif isinstance(video, (list, tuple)) and video and (
            isinstance(video[0], (list, tuple, str, os.PathLike))
            or ((isinstance(video[0], np.ndarray) or _is_tensor(video[0])) and video[0].ndim == 4)):
        videos = [_one_video(v, f"{name}[{i}]") for i, v in enumerate(video)]
    else:
        videos = [_one_video(video, name)]
    first = videos[0].shape
    for i, v in enumerate(videos[1:], 1):
        if v.shape != first:
            raise ValueError(f"{name}: the videos of a batch must have one shape (frames, height, width, 3); "
                             f"{name}[{i}] is {v.shape}, {name}[0] is {first}")
    return np.stack(videos)


def image_input(image, name: str = "image") -> np.ndarray:
    """What a user passes as an image -> float32 pixels (height, width, 3) in [0, 1].

    A PIL image, an array or tensor (H, W, 3) (uint8, or float in [0, 1]), or a path to an image file.
    Grey-scale and RGBA images are refused (ValueError naming ``name``): convert them to RGB yourself,
    since what to do with grey or alpha is a choice, not a fact.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: no such file {path!r}")
        from PIL import Image  # imported here: only an image file needs it

        try:
            with Image.open(path) as img:
                arr = _pil_rgb(img, name)
        except (OSError, SyntaxError) as e:  # Pillow's errors for a file it cannot decode
            raise ValueError(f"{name}: cannot read {path!r} as an image ({e})") from e
    elif _is_pil(image):
        arr = _pil_rgb(image, name)
    elif isinstance(image, np.ndarray) or _is_tensor(image):
        arr = _to_numpy(image)
        if arr.ndim == 2:
            raise ValueError(f"{name}: a grey-scale image (shape {arr.shape}); the model wants RGB (H, W, 3)")
        if arr.ndim != 3:
            raise ValueError(f"{name}: expected one image (height, width, 3), got shape {tuple(arr.shape)}")
    else:
        raise ValueError(f"{name}: expected a PIL image, an array or tensor (height, width, 3) or a path, "
                         f"got {type(image).__name__}")
    return _as_rgb_float(arr, name)
