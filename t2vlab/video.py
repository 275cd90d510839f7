"""Video files: writing the pipeline's frames to ``.mp4`` / ``.gif`` and reading such files back.

* :func:`export_to_video` writes an ``.mp4`` (H.264, yuv420p, plays in browsers and QuickTime) or a looping
  ``.gif``, through ``t2vlab.atomic``: encoded beside the target under a temporary name and renamed into
  place only when complete, so an error or Ctrl-C never leaves a truncated video behind.
* :func:`read_video` reads a file back as a ``uint8`` array ``(F, H, W, 3)``, after looking at what the file
  declares (:func:`inspect_video_file`, below).
* :func:`to_uint8` converts float pixels in ``[0, 1]`` to ``uint8``; :func:`uint8_video` makes any accepted
  video (below) one ``uint8`` array ``(F, H, W, 3)``.

Showing a video in a notebook is ``t2vlab.display``; what people pass as ``video=`` / ``image=`` to a
pipeline is read by ``t2vlab.inputs``.

Accepted videos (``video_frames`` / ``frames`` below):

* one video as a NumPy array or torch tensor ``(F, H, W, C)``;
* a list (or tuple) of frames, each an ``(H, W, C)`` array/tensor or a PIL image (this is what diffusers'
  ``export_to_video`` takes, float frames in ``[0, 1]`` included);
* the pipeline's ``.frames`` as returned: an array ``(B, F, H, W, C)`` or a list of per-video arrays/frame lists.
  With exactly one video it is used; with several a ``ValueError`` asks you to pick one (``frames[i]``).

**Look before you decode.** Every file read (:func:`decode_video_file`, which ``t2vlab.inputs`` and the
fine-tuning trainer's clip reader use too) is first inspected without decoding it: its size from the header
(Pillow's lazy ``Image.open`` for GIF and images, ffmpeg's stream header for the rest) and its frame count
(a GIF's frames are counted without decoding them; a video's are its duration x frame rate) are checked
against ``MAX_SIDE`` pixels a side, ``MAX_FRAMES`` frames and ``MAX_PIXELS`` pixels in all (frames x height x
width), so a 4.6 KB GIF declaring 200 frames of 8000x8000 (38 GB decoded) is refused at once. Decoding then
stops as soon as the frames read pass those limits, whatever the header said. The limits are module
constants, overridden by the environment (``T2VLAB_MAX_SIDE``, ``T2VLAB_MAX_FRAMES``, ``T2VLAB_MAX_PIXELS``,
read at each check).
A file shorter than its own structure declares is named as truncated (an interrupted download): an MP4/MOV
whose boxes run past the end of the file, a GIF without its closing byte. Each refusal is a
``VideoFileError`` (a ``ValueError``) naming the argument.

Pixels are ``uint8`` (0-255), another integer type with values in 0-255, or float in ``[0, 1]``. Floats slightly
outside ``[0, 1]`` (an unclamped decode) are clipped; floats far outside it (below -0.5 or above 1.5) are rejected,
since they almost certainly mean a ``[-1, 1]`` or ``[0, 255]`` convention that clipping would silently ruin.
``C`` is 3 (RGB) or 1 (grey, repeated to RGB). 4 channels (RGBA) are rejected rather than guessing how to treat
alpha: drop it with ``frames[..., :3]``. PIL images are converted with ``.convert("RGB")``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings

import numpy as np

from .atomic import atomic_file
from .checks import number, positive_int

__all__ = ["export_to_video", "read_video", "to_uint8", "uint8_video", "VideoFileError"]


# What a file may declare before anything is decoded (see the module docstring), unless the environment says
# otherwise (T2VLAB_MAX_SIDE, ..., read at each check). A side of 8192 is the pipeline's own cap
# (guards.MAX_SIZE); 2^28 pixels are 1024 frames of 512x512, 805 MB as uint8 and 3.2 GB as the float32 the
# pipeline works in.
MAX_SIDE = 8192
MAX_FRAMES = 1024
MAX_PIXELS = 2**28


def limit(name: str) -> int:
    """The limit ``name`` ("MAX_SIDE", ...): ``T2VLAB_<name>`` from the environment, else the module constant."""
    value = os.environ.get(f"T2VLAB_{name}")
    if not value:
        return globals()[name]
    try:
        return positive_int(f"T2VLAB_{name} (environment)", int(value))
    except ValueError:
        raise ValueError(f"T2VLAB_{name}={value!r} in the environment: expected a positive integer") from None


STILL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # inspected through Pillow's header


class VideoFileError(ValueError):
    """A video or image file refused before (or while) decoding: it declares too much, or it is truncated."""

SUPPORTED_EXTENSIONS = (".mp4", ".gif")

# x264 constant rate factor: 0 is lossless, 23 is x264's default, ~18 is commonly called "visually lossless".
# Generated videos are small (256x256, 16 frames), so the larger file is cheap and compression artefacts on
# fine detail are what users would otherwise notice.
MP4_CRF = 18

# Floats outside [0, 1] by more than this are treated as a wrong value convention, not decoder overshoot.
_FLOAT_RANGE_SLACK = 0.5


# --------------------------------------------------------------------------------------------- pixels


def to_uint8(frames, name: str = "to_uint8") -> np.ndarray:
    """Convert pixels to ``uint8``: floats in ``[0, 1]`` are scaled by 255, rounded to nearest and clipped.

    Works on any shape (a frame, a video, a batch). ``uint8`` input is returned unchanged; other integer types
    must already hold values in 0-255. NaN or infinite values raise ``ValueError``. Errors start with ``name``
    (the caller's argument).
    """
    arr = to_numpy(frames)
    if arr.dtype == np.uint8:
        return arr
    if not is_pixel_dtype(arr.dtype):
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


def is_pixel_dtype(dtype) -> bool:
    """Integers or floats; not bool (NumPy counts it as an integer), not complex, strings or objects."""
    return dtype != np.bool_ and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to check a type
    return torch is not None and isinstance(x, torch.Tensor)


def is_pil(x) -> bool:
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(x, pil_image.Image)


def to_numpy(x) -> np.ndarray:
    if is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # NumPy has no bfloat16
        return x.numpy()
    if is_pil(x):
        return np.asarray(x.convert("RGB"))
    return np.asarray(x)


def _check_pixels(arr: np.ndarray, name: str) -> np.ndarray:
    """Validate dtype and value range of an ``(..., H, W, C)`` array and return it as uint8 RGB."""
    shape = tuple(arr.shape)
    if not is_pixel_dtype(arr.dtype):
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


def uint8_video(video_frames, name: str = "video_frames") -> np.ndarray:
    """Normalise any accepted input to a C-contiguous ``uint8`` array ``(F, H, W, 3)``."""
    if isinstance(video_frames, (list, tuple)):
        if len(video_frames) == 0:
            raise ValueError(f"{name}: the video is empty (got an empty {type(video_frames).__name__})")
        first = video_frames[0]
        is_batch = isinstance(first, (list, tuple)) or (
            (isinstance(first, np.ndarray) or is_tensor(first)) and first.ndim == 4
        )
        if is_batch:  # the pipeline's .frames as a list of videos
            _pick_single_video(len(video_frames), name)
            return uint8_video(first, name)
        frames = []
        for i, frame in enumerate(video_frames):
            if not (isinstance(frame, np.ndarray) or is_tensor(frame) or is_pil(frame)):
                raise TypeError(
                    f"{name}[{i}]: expected a frame as a NumPy array, torch tensor or PIL image, "
                    f"got {type(frame).__name__}"
                )
            arr = to_numpy(frame)
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

    if not (isinstance(video_frames, np.ndarray) or is_tensor(video_frames)):
        raise TypeError(
            f"{name}: expected a NumPy array, torch tensor or list of frames, got {type(video_frames).__name__}"
        )
    arr = to_numpy(video_frames)
    if arr.ndim == 5:  # (B, F, H, W, C): the pipeline's .frames as an array
        _pick_single_video(arr.shape[0], name)
        arr = arr[0]
    if arr.ndim != 4:
        hint = " For a single frame use frame[None]." if arr.ndim == 3 else ""
        raise ValueError(f"{name}: expected a video of shape (F, H, W, 3), got shape {tuple(arr.shape)}.{hint}")
    return np.ascontiguousarray(_check_pixels(arr, name))


def check_fps(fps) -> float:
    """Frames per second: a number from 0.001 to 1000."""
    return number("fps", fps, low=1e-3, high=1000, hint=" (frames per second)")


def extension(path: str, name: str = "output_video_path") -> str:
    """The file's extension, if it is one of ``SUPPORTED_EXTENSIONS`` (a ValueError naming ``name`` if not)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"{name}: unsupported extension {ext or '(none)'!r} in {path!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return ext


# ---------------------------------------------------------------------------------------------------- writing


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
            (``FileExistsError``, also for one that appears while the video is encoded).

    MP4 is H.264 in yuv420p at CRF 18; odd heights/widths get their last row/column repeated once (H.264 in
    yuv420p needs even sizes), nothing is rescaled. The file appears at the target only once fully written.
    """
    video = uint8_video(video_frames)
    fps = check_fps(fps)
    temporary = output_video_path is None
    target = _new_temporary_mp4() if temporary else _path_str(output_video_path)
    ext = extension(target)
    if not temporary:
        _refuse_target(target, overwrite)
    with atomic_file(target, overwrite=overwrite or temporary) as tmp:  # tmp keeps the extension: ffmpeg's format
        _WRITERS[ext](str(tmp), video, fps)
        if not os.path.getsize(tmp):
            raise RuntimeError(f"writing {target!r} produced an empty file")
    if temporary:
        os.chmod(target, 0o600)  # private, as mkstemp made it
    return target


def _new_temporary_mp4() -> str:
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    return path


def _path_str(output_video_path) -> str:
    if not isinstance(output_video_path, (str, os.PathLike)):
        raise TypeError(f"output_video_path: expected a str or path, got {type(output_video_path).__name__}")
    target = os.fspath(output_video_path)
    return os.fsdecode(target) if isinstance(target, bytes) else target


def _refuse_target(target: str, overwrite: bool) -> None:
    """Refuse, before anything is encoded, a folder, a missing folder and an existing file (one that appears
    while encoding is refused by ``atomic_file``)."""
    if os.path.isdir(target):
        raise IsADirectoryError(f"output_video_path: {target!r} is a directory")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):  # atomic_file would create it; a typo in the path should not make folders
        raise FileNotFoundError(f"output_video_path: no folder {folder!r} to write {os.path.basename(target)!r} in")
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"output_video_path: {target!r} exists; pass overwrite=True to replace it")


# ---------------------------------------------------------------------------------------------------- reading


def read_video(path) -> np.ndarray:
    """Read an ``.mp4`` or ``.gif`` as a ``uint8`` array ``(F, H, W, 3)`` (via imageio)."""
    path = os.fspath(path)
    extension(path, "path")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r}")
    return decode_video_file(path)


def check_declared(height, width, frames, path, name, verb="declares") -> None:
    """Refuse (``VideoFileError`` naming ``name``) a file that declares (or holds: ``verb``) more than the limits."""
    side, most, pixels = limit("MAX_SIDE"), limit("MAX_FRAMES"), limit("MAX_PIXELS")
    too = [f"{which} {v} > MAX_SIDE={side}" for which, v in (("height", height), ("width", width)) if v > side]
    if frames is not None and frames > most:
        too.append(f"{frames} frames > MAX_FRAMES={most}")
    if (frames or 1) * height * width > pixels:
        too.append(f"{(frames or 1) * height * width:,} pixels in all > MAX_PIXELS={pixels:,}")
    if too:
        what = f"{frames} frame(s) of " if frames is not None else ""
        raise VideoFileError(
            f"{name}: {path!r} {verb} {what}{height}x{width} pixels (height x width), beyond the limits ("
            f"{'; '.join(too)}), so it is not decoded. Resize or cut it; or, if you trust it and have the memory, "
            f"raise the limits with the environment variables T2VLAB_MAX_SIDE, T2VLAB_MAX_FRAMES, T2VLAB_MAX_PIXELS")


def open_image(path, name):
    """A file as a lazy PIL image (header read, nothing decoded), its size checked; Pillow's own decompression-bomb
    refusal becomes ours (a ``VideoFileError`` naming ``name``)."""
    from PIL import Image  # imported here: only image and GIF files need it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limits are lower, checked below
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as e:
            pixels = re.search(r"\((\d+) pixels\)", str(e))
            many = f"{int(pixels[1]):,}" if pixels else "too many"
            raise VideoFileError(f"{name}: {path!r} declares an image of {many} pixels, beyond any limit (Pillow "
                                 f"refuses more than {2 * Image.MAX_IMAGE_PIXELS:,}; t2vlab more than "
                                 f"MAX_SIDE={limit('MAX_SIDE')} a side), so it is not decoded") from None
    check_declared(img.size[1], img.size[0], None, path, name)
    return img


def truncation(path) -> str | None:
    """Why the file is shorter than its own structure declares (an interrupted download), or None: an MP4/MOV
    (ISO base media file: a sequence of boxes, each starting with its size) whose boxes run past the end, a GIF
    without its closing byte. Other containers are not looked into."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] in (b"GIF8",):
            f.seek(max(size - 1, 0))
            return None if f.read(1) == b";" else "it does not end with the GIF trailer byte (0x3B)"
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
            return None
        pos = 0
        while pos < size:
            f.seek(pos)
            box = f.read(16)
            if len(box) < 8:
                return f"a box header at byte {pos:,} is cut off"
            n, kind = int.from_bytes(box[:4], "big"), box[4:8].decode("latin-1")
            if n == 1:  # a 64-bit size follows the type
                if len(box) < 16:
                    return f"the {kind!r} box header at byte {pos:,} is cut off"
                n = int.from_bytes(box[8:16], "big")
            elif n == 0:  # the box runs to the end of the file
                return None
            if n < 8:  # not a box structure after all: ffmpeg will say what it is
                return None
            if pos + n > size:
                return f"its {kind!r} box declares {n:,} bytes from byte {pos:,}, but the file ends at {size:,}"
            pos += n
    return None


def _check_whole(path, name):
    why = truncation(path)
    if why:
        raise VideoFileError(f"{name}: {path!r} is truncated ({why}): an interrupted download or copy? Get the "
                             "whole file again")


def inspect_video_file(path, name="path"):
    """(frames or None, height, width) as the file declares them, checked against the limits and for
    truncation (``VideoFileError`` naming ``name``), without decoding a frame: GIFs through Pillow (their frames
    counted, not decoded) and still images through Pillow, the rest through ffmpeg's header (frames: duration x
    frame rate, when it gives both)."""
    path = os.fspath(path)
    _check_whole(path, name)
    if os.path.splitext(path)[1].lower() in (".gif", *STILL_EXTENSIONS):
        with open_image(path, name) as img:
            frames = getattr(img, "n_frames", 1)
            width, height = img.size
    else:
        meta = _ffmpeg_frames(path)
        try:
            info = next(meta)
        finally:
            meta.close()  # stops ffmpeg
        width, height = info["size"]
        duration, fps = info.get("duration"), info.get("fps")
        frames = round(duration * fps) if duration and fps and np.isfinite(duration * fps) else None
    check_declared(height, width, frames, path, name)
    return frames, height, width


def _ffmpeg_frames(path):
    """imageio-ffmpeg's reader (what imageio's FFMPEG plugin runs): its header first, then raw RGB frames."""
    import imageio_ffmpeg  # imported here: only video files need it

    return imageio_ffmpeg.read_frames(path, pix_fmt="rgb24", bits_per_pixel=24)


def decode_video_file(path, name="path") -> np.ndarray:
    """The frames of any video file imageio reads, as it reads them (``uint8``, ``(F, H, W, 3)`` for a video):
    ``.gif`` through Pillow, the rest through ffmpeg; ``inspect_video_file`` first, and decoding stops at the
    first frame beyond the limits."""
    import imageio.v3 as iio  # imported here: only reading needs it, and it is slow to import

    path = os.fspath(path)
    inspect_video_file(path, name)
    if os.path.splitext(path)[1].lower() == ".gif":
        # mode="RGB": composite each frame over the previous ones (GIF frames may be partial) and drop the palette.
        return np.asarray(iio.imread(path, index=None, plugin="pillow", mode="RGB"))
    reader = _ffmpeg_frames(path)
    try:
        width, height = next(reader)["size"]
        frames = []
        for raw in reader:
            frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
            check_declared(height, width, len(frames), path, name, "holds at least")  # a header may lie
    finally:
        reader.close()
    if not frames:
        raise VideoFileError(f"{name}: {path!r} holds no frames")
    return np.stack(frames)
