"""What people pass to a pipeline as a video (``video=``, video-to-video) or an image (``image=``,
image-to-video), made into float32 pixels in [0, 1], channels last.

* :func:`video_input`: a list of frames, an array or tensor (F, H, W, 3), a path to a video file, or several
  videos (B, F, H, W, 3) -> (B, F, H, W, 3).
* :func:`image_input`: a PIL image, an array or tensor (H, W, 3), or a path -> (H, W, 3).

Unlike ``video.export_to_video`` (which writes 8-bit files) these keep float input as it is, so a float video
gives the same numbers as the reference pipeline. Rules, each a ValueError naming the argument: RGB only (grey
and RGBA are refused, not guessed), pixels uint8 or float in [0, 1], frames of one size. Files are looked at
before they are decoded (``video.inspect_video_file`` / ``video.open_image``: declared size and frame count
within ``video.MAX_SIDE``/``MAX_FRAMES``/``MAX_PIXELS``, truncated files named as such), and a PIL image (a
file's or yours) is turned upright by its EXIF orientation first, as diffusers' ``load_image`` does
(``PIL.ImageOps.exif_transpose``): a phone photo is not used on its side.
"""

from __future__ import annotations

import os

import numpy as np

from .video import (
    VideoFileError,
    check_declared,
    decode_video_file,
    is_pil,
    is_pixel_dtype,
    is_tensor,
    open_image,
    to_numpy,
)

__all__ = ["video_input", "image_input"]


def _upright(img, name):
    """A PIL image within the size limits, turned as its EXIF orientation says (diffusers' ``load_image`` does
    the same; a camera stores the pixels as the sensor saw them and the turn in the EXIF tag)."""
    from PIL import ImageOps  # imported here: only PIL images need it

    check_declared(img.size[1], img.size[0], None, getattr(img, "filename", "") or "the image", name)
    return ImageOps.exif_transpose(img)


def _pil_rgb(img, name):
    """A PIL image as (H, W, 3) uint8, upright; grey and alpha modes are refused (converting them would be a guess)."""
    img = _upright(img, name)
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
    if not is_pixel_dtype(arr.dtype):
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
    """Any video file imageio reads (``video.decode_video_file``); a still image is a video of one frame."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no such file {path!r}")
    try:
        frames = decode_video_file(path, name)
    except VideoFileError:  # too large or truncated: said already, naming the argument
        raise
    except Exception as e:  # imageio raises many kinds (OSError, ValueError, its own) for a file it cannot read
        raise ValueError(f"{name}: cannot read {path!r} as a video ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if frames.ndim == 3:  # a still image (one frame)
        frames = frames[None]
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"{name}: {path!r} holds no frames (read shape {frames.shape})")
    return frames


def _frame_array(frame, name) -> np.ndarray:
    if is_pil(frame):
        return _pil_rgb(frame, name)
    if isinstance(frame, np.ndarray) or is_tensor(frame):
        return to_numpy(frame)
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
    elif isinstance(video, np.ndarray) or is_tensor(video):
        arr = to_numpy(video)
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
    return video.permute(*order) if is_tensor(video) else video.transpose(order)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or is_tensor(v)



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
    if (isinstance(video, np.ndarray) or is_tensor(video)) and video.ndim == 5:
        if video.shape[0] == 0:
            raise ValueError(f"{name}: an empty batch of videos (shape {tuple(video.shape)})")
        videos = [_one_video(v, f"{name}[{i}]") for i, v in enumerate(video)]
    elif isinstance(video, (list, tuple)) and video and (
            isinstance(video[0], (list, tuple, str, os.PathLike))
            or ((isinstance(video[0], np.ndarray) or is_tensor(video[0])) and video[0].ndim == 4)):
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
        try:
            with open_image(path, name) as img:  # the header only: its size is checked before decoding
                arr = _pil_rgb(img, name)
        except (OSError, SyntaxError) as e:  # Pillow's errors for a file it cannot decode
            raise ValueError(f"{name}: cannot read {path!r} as an image ({e})") from e
    elif is_pil(image):
        arr = _pil_rgb(image, name)
    elif isinstance(image, np.ndarray) or is_tensor(image):
        arr = to_numpy(image)
        if arr.ndim == 2:
            raise ValueError(f"{name}: a grey-scale image (shape {arr.shape}); the model wants RGB (H, W, 3)")
        if arr.ndim != 3:
            raise ValueError(f"{name}: expected one image (height, width, 3), got shape {tuple(arr.shape)}")
    else:
        raise ValueError(f"{name}: expected a PIL image, an array or tensor (height, width, 3) or a path, "
                         f"got {type(image).__name__}")
    return _as_rgb_float(arr, name)
