"""Video files and showing them: t2vlab.video (export to mp4/gif, atomic writes, input checks, reading back)
and t2vlab.display (the notebook helpers).

Files are read back with imageio directly (not only through our read_video), so a bug shared by our writer and
reader cannot hide itself. Videos are tiny (8 frames of 64x48) to keep the whole file around a few seconds.
"""

import base64
import os
import stat
import tempfile
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

import t2vlab
from t2vlab import display
from t2vlab.atomic import leftovers
from t2vlab.display import frame_grid, show_video
from t2vlab.video import export_to_video, read_video, to_uint8

F, H, W = 8, 48, 64

# Tolerances for content after a round trip, as mean absolute difference per frame in 0-255 units.
# MP4 is H.264 at CRF 18 in yuv420p: nearly transparent, but colour is stored at half resolution, so the square's
# edges blur in chroma (single pixels can be off by ~12). Measured mean is ~0.3; 4 leaves headroom across ffmpeg
# builds while still failing if frames were reordered (neighbouring frames of the test video differ by ~9) or the
# picture were rescaled or shifted.
MP4_MEAN_TOL = 4.0
# GIF: per-frame adaptive 256-colour palette. The test video has < 256 colours, so it should be near exact;
# measured mean ~0.02. 2 allows a different quantiser while catching any real content change.
GIF_MEAN_TOL = 2.0


def moving_square(frames=F, height=H, width=W):
    """Float video in [0, 1]: a horizontal grey ramp with an orange square moving right 5 px a frame."""
    video = np.empty((frames, height, width, 3), np.float32)
    video[:] = np.linspace(0.1, 0.6, width, dtype=np.float32)[None, None, :, None]
    for i in range(frames):
        x = 4 + 5 * i
        video[i, 10 : 10 + 16, x : x + 16] = (1.0, 0.5, 0.2)
    return video


def per_frame_mean_abs_diff(a_uint8, b_uint8):
    return np.abs(a_uint8.astype(np.float64) - b_uint8.astype(np.float64)).mean(axis=(1, 2, 3))


def read_mp4(path):
    return np.asarray(iio.imread(path, index=None, plugin="FFMPEG"))


def read_gif(path):
    return np.asarray(iio.imread(path, index=None, plugin="pillow", mode="RGB"))


def listing(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("as_uint8", [False, True], ids=["float", "uint8"])
def test_mp4_round_trip(tmp_path, as_uint8):
    video = moving_square()
    expected = to_uint8(video)
    target = tmp_path / "clip.mp4"
    out = export_to_video(expected if as_uint8 else video, target, fps=8)

    assert out == str(target) and isinstance(out, str)
    back = read_mp4(out)
    assert back.shape == (F, H, W, 3) and back.dtype == np.uint8
    assert per_frame_mean_abs_diff(back, expected).max() < MP4_MEAN_TOL
    meta = iio.immeta(out, plugin="FFMPEG")
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")  # what browsers and QuickTime play
    assert meta["fps"] == pytest.approx(8.0)
    np.testing.assert_array_equal(read_video(out), back)
    assert listing(tmp_path) == ["clip.mp4"]  # no temporary file left next to it


@pytest.mark.parametrize("as_uint8", [False, True], ids=["float", "uint8"])
def test_gif_round_trip(tmp_path, as_uint8):
    video = moving_square()
    expected = to_uint8(video)
    out = export_to_video(expected if as_uint8 else video, tmp_path / "clip.gif", fps=10)

    back = read_gif(out)
    assert back.shape == (F, H, W, 3)
    assert per_frame_mean_abs_diff(back, expected).max() < GIF_MEAN_TOL
    with Image.open(out) as im:
        assert im.info["loop"] == 0  # loop forever
        assert im.info["duration"] == 100  # 10 fps -> 100 ms a frame
    np.testing.assert_array_equal(read_video(out), back)
    assert listing(tmp_path) == ["clip.gif"]


def test_float_and_uint8_inputs_give_the_same_gif(tmp_path):
    video = moving_square()
    a = export_to_video(video, tmp_path / "a.gif")
    b = export_to_video(to_uint8(video), tmp_path / "b.gif")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_odd_size_is_padded_not_rescaled(tmp_path, caplog):
    h, w = 17, 33
    video = to_uint8(moving_square(5, h, w))
    out = export_to_video(video, tmp_path / "odd.mp4")

    back = read_mp4(out)
    # yuv420p needs even sizes: one replicated row and column are added, nothing is scaled.
    assert back.shape == (5, h + 1, w + 1, 3)
    assert per_frame_mean_abs_diff(back[:, :h, :w], video).max() < MP4_MEAN_TOL
    assert "resizing" not in caplog.text  # imageio warns when it rescales to the macro block size

    gif = read_gif(export_to_video(video, tmp_path / "odd.gif"))
    assert gif.shape == (5, h, w, 3)  # GIF has no such constraint: exact size


def test_other_input_forms(tmp_path):
    video = moving_square(4, 16, 24)
    expected = read_gif(export_to_video(video, tmp_path / "ref.gif"))
    forms = {
        "tensor": torch.from_numpy(video),
        "bfloat16 tensor": torch.from_numpy(video).to(torch.bfloat16),
        "list of arrays": list(video),
        "list of tensors": list(torch.from_numpy(video)),
        "PIL images": [Image.fromarray(f) for f in to_uint8(video)],
        "int64": to_uint8(video).astype(np.int64),
    }
    for name, frames in forms.items():
        back = read_gif(export_to_video(frames, tmp_path / "x.gif", overwrite=True))
        assert back.shape == expected.shape, name
        # bfloat16 keeps 8 bits of mantissa, so a few levels of difference are expected there only.
        assert np.abs(back.astype(int) - expected.astype(int)).mean() < (2 if "bfloat" in name else 0.01), name


def test_grey_single_channel_is_repeated_to_rgb(tmp_path):
    grey = moving_square(3, 16, 24)[..., :1]
    back = read_gif(export_to_video(grey, tmp_path / "g.gif"))
    assert back.shape == (3, 16, 24, 3)
    np.testing.assert_array_equal(back[..., 0], back[..., 1])
    np.testing.assert_array_equal(back[..., 0], back[..., 2])
    assert np.abs(back[..., 0].astype(int) - to_uint8(grey)[..., 0]).mean() < GIF_MEAN_TOL


# --------------------------------------------------------------------------------------- pipeline .frames input


def test_pipeline_frames_with_one_video_write_that_video(tmp_path):
    video = moving_square(4, 16, 24)
    expected = read_gif(export_to_video(video, tmp_path / "ref.gif"))
    batches = {
        "array (1, F, H, W, 3)": video[None],
        "list of one array": [video],
        "list of one list of PIL": [[Image.fromarray(f) for f in to_uint8(video)]],
        "tensor (1, F, H, W, 3)": torch.from_numpy(video)[None],
    }
    for name, frames in batches.items():
        out = export_to_video(frames, tmp_path / "x.gif", overwrite=True)
        np.testing.assert_array_equal(read_gif(out), expected, err_msg=name)


@pytest.mark.parametrize("frames", [np.zeros((2, 3, 8, 8, 3), np.float32), [np.zeros((3, 8, 8, 3))] * 2])
def test_pipeline_frames_with_several_videos_ask_to_pick_one(tmp_path, frames):
    with pytest.raises(ValueError, match=r"batch of 2 videos.*frames\[i\]"):
        export_to_video(frames, tmp_path / "x.mp4")
    assert listing(tmp_path) == []


# ------------------------------------------------------------------------------------------------- bad inputs

GOOD = np.zeros((2, 8, 8, 3), np.float32)


@pytest.mark.parametrize(
    "frames, kwargs, exc, match",
    [
        (np.zeros((2, 8, 8), np.float32), {}, ValueError, r"video_frames: .*\(F, H, W, 3\).*shape \(2, 8, 8\)"),
        (np.zeros((1, 1, 2, 8, 8, 3)), {}, ValueError, r"video_frames: .*shape \(1, 1, 2, 8, 8, 3\)"),
        (np.zeros((2, 8, 8, 4), np.float32), {}, ValueError, r"video_frames: .*shape \(2, 8, 8, 4\).*RGBA"),
        (np.zeros((2, 8, 8, 2), np.float32), {}, ValueError, r"video_frames: .*channels.*\(2, 8, 8, 2\)"),
        (np.zeros((2, 3, 8, 8), np.float32), {}, ValueError, r"video_frames: .*\(2, 3, 8, 8\).*channels-first"),
        (np.zeros((0, 8, 8, 3), np.float32), {}, ValueError, r"video_frames: .*empty.*\(0, 8, 8, 3\)"),
        (np.zeros((2, 0, 8, 3), np.uint8), {}, ValueError, r"video_frames: .*empty"),
        (np.zeros((0, 2, 8, 8, 3)), {}, ValueError, r"video_frames: .*empty batch"),
        ([], {}, ValueError, r"video_frames: .*empty"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), {}, ValueError, r"video_frames: .*NaN"),
        (np.full((2, 8, 8, 3), -1.0, np.float32), {}, ValueError, r"video_frames: .*\[0, 1\].*\(x \+ 1\) / 2"),
        (np.full((2, 8, 8, 3), 255.0, np.float32), {}, ValueError, r"video_frames: .*\[0, 1\].*uint8"),
        (np.full((2, 8, 8, 3), 300, np.int32), {}, ValueError, r"0\.\.255"),
        (np.zeros((2, 8, 8, 3), bool), {}, TypeError, r"video_frames: .*dtype bool"),
        ("clip.mp4", {}, TypeError, r"video_frames: .*got str"),
        ([np.zeros((8, 8, 3)), 7], {}, TypeError, r"video_frames\[1\]: .*got int"),
        ([np.zeros((8, 8, 3)), np.zeros((8, 9, 3))], {}, ValueError, r"video_frames\[1\]: .*same size"),
        ([np.zeros((8, 8))], {}, ValueError, r"video_frames\[0\]: .*shape \(8, 8\)"),
        (GOOD, {"fps": 0}, ValueError, r"fps must be a number in \[0.001, 1000\], got 0 \(frames per second\)"),
        (GOOD, {"fps": 1e300}, ValueError, r"fps must .*got 1e\+300"),
        (GOOD, {"fps": -8}, ValueError, r"fps must .*got -8"),
        (GOOD, {"fps": float("nan")}, ValueError, r"fps must .*got nan"),
        (GOOD, {"fps": float("inf")}, ValueError, r"fps must .*got inf"),
        (GOOD, {"fps": "8"}, ValueError, r"fps must .*got '8'"),
        (GOOD, {"fps": True}, ValueError, r"fps must .*got True"),
        (GOOD, {"name": "clip.avi"}, ValueError, r"output_video_path: .*'\.avi'.*\.mp4, \.gif"),
        (GOOD, {"name": "clip"}, ValueError, r"output_video_path: .*\(none\)"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(tmp_path, frames, kwargs, exc, match):
    kwargs = dict(kwargs)
    target = tmp_path / kwargs.pop("name", "clip.mp4")
    with pytest.raises(exc, match=match):
        export_to_video(frames, target, **kwargs)
    assert listing(tmp_path) == []  # rejected before anything was written


def test_bad_path_type():
    with pytest.raises(TypeError, match="output_video_path"):
        export_to_video(GOOD, 42)


def test_a_missing_folder_is_named_and_not_made(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"output_video_path: no folder .*'clip.gif'"):
        export_to_video(GOOD, tmp_path / "no" / "such" / "clip.gif")
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------- atomic writing


def _fail_after_two_frames(exc):
    """A stand-in for imageio_ffmpeg.write_frames: really encodes, then fails on the third frame."""
    real = imageio_ffmpeg.write_frames
    seen = {}

    def write_frames(path, *args, **kwargs):
        seen["path"] = path
        writer = real(path, *args, **kwargs)
        writer.send(None)
        try:
            for _ in range(2):
                writer.send((yield))
            yield
            seen["existed"] = os.path.exists(path)  # the partial file is really there at this point
            seen["leftovers"] = leftovers(os.path.dirname(path))
            raise exc
        finally:
            writer.close()

    return write_frames, seen


@pytest.mark.parametrize("exc", [OSError("disk full (simulated)"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_failed_mp4_write_leaves_nothing(tmp_path, monkeypatch, exc):
    fake, seen = _fail_after_two_frames(exc)
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", fake)
    target = tmp_path / "clip.mp4"
    with pytest.raises(type(exc)):
        export_to_video(moving_square(), target)
    assert seen["existed"] and os.path.dirname(seen["path"]) == str(tmp_path)  # it wrote next to the target
    assert seen["leftovers"] == [Path(seen["path"])]  # what a killed process would leave, atomic.leftovers finds
    assert listing(tmp_path) == []  # neither the target nor the temporary file


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"the previous video")
    fake, _ = _fail_after_two_frames(OSError("disk full (simulated)"))
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", fake)
    with pytest.raises(OSError, match="disk full"):
        export_to_video(moving_square(), target, overwrite=True)
    assert target.read_bytes() == b"the previous video"
    assert listing(tmp_path) == ["clip.mp4"]


def test_failed_gif_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"GIF89a half a file")
        raise OSError("encoder crashed (simulated)")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="encoder crashed"):
        export_to_video(moving_square(), tmp_path / "clip.gif")
    assert listing(tmp_path) == []


def test_overwrite(tmp_path):
    target = tmp_path / "clip.gif"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_to_video(GOOD, target)  # never overwrite unless asked
    assert target.read_bytes() == b"keep me"
    assert listing(tmp_path) == ["clip.gif"]

    export_to_video(GOOD, target, overwrite=True)
    assert read_gif(target).shape == (1, 8, 8, 3)  # 2 identical frames: Pillow merges them into one longer one

    fresh = tmp_path / "new.gif"
    assert export_to_video(GOOD, fresh, overwrite=False) == str(fresh)


def test_written_file_has_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    out = export_to_video(GOOD, tmp_path / "clip.gif")
    # mkstemp creates 0o600 files; the final file should look like any other file the user creates.
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~umask


def test_path_none_writes_a_temporary_mp4():
    out = export_to_video(moving_square(3, 16, 16))
    try:
        assert isinstance(out, str) and out.endswith(".mp4")
        assert os.path.dirname(out) == tempfile.gettempdir()
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # private, as a temporary file is made
        assert read_mp4(out).shape == (3, 16, 16, 3)
    finally:
        os.unlink(out)


def test_lazy_top_level_export():
    assert t2vlab.export_to_video is export_to_video


# ------------------------------------------------------------------------------------------- helpers/notebooks


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.1, 0.0, 0.49 / 255, 100.7 / 255, 1.0, 1.3], np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 0, 101, 255, 255])  # 101: rounded, not truncated to 100
    u = np.array([0, 7, 255], np.uint8)
    assert to_uint8(u) is u
    np.testing.assert_array_equal(to_uint8(torch.tensor([0.0, 0.5, 1.0])), [0, 128, 255])
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan]))


def test_frame_grid():
    video = to_uint8(moving_square())
    grid = frame_grid(video)  # 8 frames -> 3 per row, 3 rows, 2 px white gaps
    assert grid.shape == (3 * H + 2 * 2, 3 * W + 2 * 2, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[H + 2 : 2 * H + 2, W + 2 : 2 * W + 2], video[4])  # row 1, col 1
    assert (grid[-H:, -W:] == 255).all()  # the ninth cell is empty

    flat = frame_grid(video, nrow=4, padding=0)
    assert flat.shape == (2 * H, 4 * W, 3)
    np.testing.assert_array_equal(flat[H:, 3 * W :], video[7])
    assert frame_grid(video, nrow=100, padding=0).shape == (H, F * W, 3)
    with pytest.raises(ValueError, match="nrow"):
        frame_grid(video, nrow=0)


def _embedded_bytes(html, mime):
    prefix = f"data:{mime};base64,"
    start = html.index(prefix) + len(prefix)
    return base64.b64decode(html[start : html.index('"', start)])


def test_show_video_embeds_a_playable_mp4(tmp_path):
    html = show_video(moving_square(), fps=8)._repr_html_()
    assert "<video" in html
    for attribute in ("autoplay", "loop", "muted", "controls"):
        assert attribute in html
    path = tmp_path / "embedded.mp4"
    path.write_bytes(_embedded_bytes(html, "video/mp4"))
    assert read_mp4(path).shape == (F, H, W, 3)


def test_show_video_from_a_path_and_without_ffmpeg(tmp_path, monkeypatch):
    mp4 = export_to_video(moving_square(2, 16, 16), tmp_path / "a.mp4")
    assert "<video" in show_video(mp4)._repr_html_()
    gif = export_to_video(moving_square(2, 16, 16), tmp_path / "a.gif")
    assert "data:image/gif;base64," in show_video(gif)._repr_html_()

    monkeypatch.setattr(display, "_ffmpeg_available", lambda: False)
    html = show_video(moving_square(2, 16, 16))._repr_html_()
    assert "<img" in html and "<video" not in html
    path = tmp_path / "embedded.gif"
    path.write_bytes(_embedded_bytes(html, "image/gif"))
    assert read_gif(path).shape == (2, 16, 16, 3)


def test_read_video_checks_its_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="path: .*'\\.webm'"):
        read_video(tmp_path / "clip.webm")


def test_overwrite_false_does_not_clobber_a_file_that_appears_during_the_write(tmp_path, monkeypatch):
    target = tmp_path / "clip.gif"
    real_save = Image.Image.save

    def save_while_someone_else_creates_the_target(self, fp, *args, **kwargs):
        target.write_bytes(b"written by someone else meanwhile")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_while_someone_else_creates_the_target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_to_video(GOOD, target, overwrite=False)
    assert target.read_bytes() == b"written by someone else meanwhile"
    assert listing(tmp_path) == ["clip.gif"]
