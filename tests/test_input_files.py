"""Look before you decode: every reader of image and video files (``t2vlab.video.decode_video_file``, which
``read_video``, ``inputs.video_input`` / ``image_input`` and the fine-tuning trainer's clip reader use) checks
what a file declares against ``video.MAX_SIDE`` / ``MAX_FRAMES`` / ``MAX_PIXELS`` before decoding a pixel,
names a truncated file as truncated, and turns a photo upright by its EXIF orientation.

"Before decoding" is checked by spies on the decoders (Pillow's ``ImageFile.load``, imageio's ``imread``,
imageio-ffmpeg's frame reader): a refusal with a spy that was called would be too late.
"""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from t2vlab import finetune, video
from t2vlab.__main__ import main
from t2vlab.inputs import image_input, video_input
from t2vlab.video import VideoFileError, export_to_video, read_video

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------- crafted files
def gif_declaring(width, height, frames) -> bytes:
    """A GIF whose screen is ``width`` x ``height`` over ``frames`` frames of one pixel each: 8000x8000 over 200
    frames is 4.6 KB, and 38 GB once decoded (each frame is composited over the whole screen)."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + bytes([0xF0, 0, 0]) + bytes(6))
    out += b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for _ in range(frames):
        out += b"\x21\xF9\x04\x00\x0A\x00\x00\x00"  # graphic control: 1/10 s
        out += b"\x2C" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00"  # a 1x1 image at (0, 0)
        out += b"\x02\x02\x44\x01\x00"  # its LZW data
    return bytes(out + b"\x3B")


def png_declaring(width, height) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with 64 bytes of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
            + chunk(b"IEND", b""))


@pytest.fixture()
def spies(monkeypatch):
    """Every decoder the readers use, counting its calls."""
    import imageio.v3 as iio

    calls = []
    load, imread, frames = ImageFile.ImageFile.load, iio.imread, video._ffmpeg_frames

    def spy(name, real):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy("Pillow load", load))
    monkeypatch.setattr(iio, "imread", spy("imageio imread", imread))
    real_frames = frames

    def counted_frames(path):  # the header is allowed (inspect_video_file), a frame is not
        reader = real_frames(path)
        yield next(reader)
        for raw in reader:
            calls.append("ffmpeg frame")
            yield raw

    monkeypatch.setattr(video, "_ffmpeg_frames", counted_frames)
    return calls


def moving(frames=8, height=32, width=48):
    x = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        left = (3 * i) % (width - 8)  # every frame different: a GIF merges equal consecutive frames
        x[i, :, left:left + 8] = (255, 128, 0)
    return x


# --------------------------------------------------------------------------------- declared sizes
def test_a_small_gif_declaring_gigabytes_is_refused_before_decoding(tmp_path, spies, clips):
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(gif_declaring(8000, 8000, 200))
    assert bomb.stat().st_size < 5000
    for read, name in ((lambda: video_input(bomb), "video"), (lambda: read_video(bomb), "path"),
                       (lambda: video_input([bomb, bomb], "video"), "video[0]")):
        refusal = f"^{re.escape(name)}: .*declares 200 frame.* of 8000x8000 pixels"
        with pytest.raises(VideoFileError, match=refusal) as e:
            read()
        assert "12,800,000,000 pixels in all > MAX_PIXELS" in str(e.value) and "T2VLAB_MAX_PIXELS" in str(e.value)
    with pytest.raises(finetune.DataError, match="declares 200 frame"):  # the trainer's clip reader
        finetune.read_clip(bomb, 8, 32)
    assert spies == []


def test_a_png_declaring_20000x20000_is_our_error_naming_image_and_the_cli_says_so(tmp_path, spies, monkeypatch,
                                                                                   capsys):
    big = tmp_path / "big.png"
    big.write_bytes(png_declaring(20000, 20000))
    with pytest.raises(VideoFileError, match="^image: .*400,000,000 pixels") as e:
        image_input(big)
    assert not isinstance(e.value, Image.DecompressionBombError)
    wide = tmp_path / "wide.png"  # within Pillow's limit, beyond ours
    wide.write_bytes(png_declaring(9000, 100))
    with pytest.raises(VideoFileError, match=r"^image: .*width 9000 > MAX_SIDE=8192"):
        image_input(wide)
    monkeypatch.setattr("t2vlab.__main__.load", lambda *a, **k: pytest.fail("a model was loaded first"))
    assert main(["a prompt", "--image", str(big), "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t2vlab: --image: ") and "400,000,000 pixels" in err and "Traceback" not in err
    assert spies == []


def test_a_video_declaring_more_frames_than_allowed_is_refused_from_its_header(tmp_path, spies, monkeypatch):
    path = export_to_video(moving(16), tmp_path / "v.mp4")
    monkeypatch.setattr(video, "MAX_FRAMES", 10)
    with pytest.raises(VideoFileError, match="^video: .*declares 16 frame.*16 frames > MAX_FRAMES=10"):
        video_input(path)
    monkeypatch.setattr(video, "MAX_FRAMES", 1024)
    monkeypatch.setattr(video, "MAX_SIDE", 40)
    with pytest.raises(VideoFileError, match="width 48 > MAX_SIDE=40"):
        video_input(path)
    assert spies == []


def test_decoding_stops_at_the_limit_whatever_the_header_says(tmp_path, monkeypatch):
    """A header without a duration (so no declared count) over an endless stream: the reader stops at the first
    frame beyond MAX_FRAMES, having held no more than that."""
    def endless(path):
        yield {"size": (8, 4), "fps": 8.0, "duration": None}
        while True:
            yield bytes(4 * 8 * 3)

    path = tmp_path / "lying.mp4"
    path.write_bytes(b"\x00\x00\x00\x08free")  # a well-formed box, so the truncation check passes
    monkeypatch.setattr(video, "_ffmpeg_frames", endless)
    monkeypatch.setattr(video, "MAX_FRAMES", 5)
    with pytest.raises(VideoFileError, match="holds at least 6 frame"):
        video.decode_video_file(path, "video")


def test_the_environment_sets_the_limits(tmp_path, monkeypatch):
    path = export_to_video(moving(16), tmp_path / "v.gif")
    monkeypatch.setenv("T2VLAB_MAX_FRAMES", "15")
    with pytest.raises(VideoFileError, match="16 frames > MAX_FRAMES=15"):
        video_input(path)
    monkeypatch.setenv("T2VLAB_MAX_FRAMES", "16")
    assert video_input(path).shape == (1, 16, 32, 48, 3)
    monkeypatch.setenv("T2VLAB_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="T2VLAB_MAX_PIXELS='lots' in the environment"):
        video_input(path)


# --------------------------------------------------------------------------------- properties
LIMITS = dict(MAX_SIDE=40, MAX_FRAMES=6, MAX_PIXELS=40 * 40 * 3)


def over(height, width, frames):
    return (max(height, width) > LIMITS["MAX_SIDE"] or frames > LIMITS["MAX_FRAMES"]
            or frames * height * width > LIMITS["MAX_PIXELS"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 65535), height=st.integers(1, 65535), frames=st.integers(1, 300),
       small=st.booleans())
def test_property_a_gif_is_decoded_if_and_only_if_what_it_declares_is_within_the_limits(
        tmp_path, monkeypatch, width, height, frames, small):
    """Any screen size a GIF can declare (1..65535 a side) and any frame count: refused before any decoding
    (naming the argument and the limit) exactly when beyond a limit, else decoded to what it declares."""
    if small:  # half the draws near the limits, where the boundary is
        width, height, frames = 1 + width % 48, 1 + height % 48, 1 + frames % 8
    for k, v in LIMITS.items():
        monkeypatch.setattr(video, k, v)
    path = tmp_path / "g.gif"
    path.write_bytes(gif_declaring(width, height, frames))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, load=ImageFile.ImageFile.load: (
        decoded.append(1), load(self))[1])
    try:
        out = video_input(path)
    except VideoFileError as e:
        assert over(height, width, frames) and not decoded
        assert str(e).startswith("video: ") and "MAX_" in str(e)
    else:
        assert not over(height, width, frames) and out.shape == (1, frames, height, width, 3)
    finally:
        monkeypatch.undo()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1), real=st.booleans())
def test_property_an_image_is_decoded_if_and_only_if_its_declared_size_is_within_the_limits(
        tmp_path, monkeypatch, width, height, real):
    """PNG headers declaring any size a PNG can (1..2^31-1 a side): refused before decoding, naming ``image``,
    exactly when beyond a limit. Real images (drawn small, near the limit) within it are decoded whole."""
    if real:
        width, height = 1 + width % 48, 1 + height % 48
    for k, v in LIMITS.items():
        monkeypatch.setattr(video, k, v)
    path = tmp_path / "i.png"
    if real:
        Image.new("RGB", (width, height), (10, 20, 30)).save(path)
    else:
        path.write_bytes(png_declaring(width, height))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, load=ImageFile.ImageFile.load: (
        decoded.append(1), load(self))[1])
    try:
        out = image_input(path)
    except VideoFileError as e:
        assert over(height, width, 1) and not decoded and str(e).startswith("image: ")
    except ValueError as e:  # within the limits, a crafted header's 64 bytes of data do not decode
        assert not real and not over(height, width, 1) and "cannot read" in str(e)
    else:
        assert not over(height, width, 1) and out.shape == (height, width, 3)
    finally:
        monkeypatch.undo()


# --------------------------------------------------------------------------------- truncated files
def mp4_without_faststart(path, frames):
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], macro_block_size=1)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


@pytest.mark.parametrize("kind", ["mp4", "mp4 index at the end", "gif"])
def test_a_truncated_file_is_named_truncated_not_used_as_a_shorter_video(tmp_path, kind, clips):
    """An interrupted download: ffmpeg decodes such an mp4 to the frames it holds (9 of 16 here), and Pillow a
    GIF to the frames before the cut; both are refused instead, by every reader."""
    whole = tmp_path / f"whole.{kind[:3]}"
    if kind == "mp4 index at the end":
        mp4_without_faststart(whole, moving(16))
    else:
        export_to_video(moving(16), whole)
    assert len(read_video(whole)) == 16
    cut = tmp_path / f"cut.{kind[:3]}"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size * 6 // 10])
    for read, name in ((lambda: video_input(cut), "video"), (lambda: read_video(cut), "path")):
        with pytest.raises(VideoFileError, match=f"^{name}: .*is truncated .*interrupted download"):
            read()
    with pytest.raises(finetune.DataError, match="is truncated"):
        finetune.read_clip(cut, 8, 32)


# --------------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path, orientation):
    """A camera stores the sensor's pixels and the turn in the EXIF tag 0x0112: 6 means "turn 90 degrees
    clockwise to view". Read from a file or passed as a PIL image, the pixels come upright."""
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:4, :4] = 255  # a white corner, top left as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    img.save(path, exif=exif)
    upright = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    assert np.array_equal(image_input(path), upright / 255.0)
    with Image.open(path) as opened:
        assert np.array_equal(image_input(opened), upright / 255.0)
    assert np.array_equal(video_input([Image.open(path)])[0, 0], upright / 255.0)
