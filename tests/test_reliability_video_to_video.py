"""Bad input to video-to-video, image-to-video and the upscale CLI (docs/reliability.md): each is a clear
error naming the argument, raised before any model runs (a hook on every model fails the test otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2vlab import TextToVideoPipeline
from t2vlab.guards import MAX_FRAMES
from t2vlab.video_to_video import VideoToVideoPipeline
from t2vlab.weights import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", variants=(None,))


@pytest.fixture(scope="module")
def pipes(tiny):
    """(text-to-video, video-to-video) on shared models, each model failing the test if it runs."""
    t2v = TextToVideoPipeline.from_pretrained(tiny)
    t2v.set_progress_bar_config(disable=True)

    def ran(module, args):
        raise AssertionError(f"{type(module).__name__} ran before the bad input was refused")

    for model in (t2v.unet, t2v.text_encoder, t2v.vae.encoder, t2v.vae.decoder):
        model.register_forward_pre_hook(ran)
    return t2v, VideoToVideoPipeline.from_pipe(t2v)


def frames(n=2, h=32, w=32, c=3, dtype=np.uint8):
    return np.full((n, h, w, c), 100, dtype) if dtype == np.uint8 else np.full((n, h, w, c), 0.4, dtype)


GOOD = frames()
BAD_VIDEOS = [
    (dict(strength=0.0), "strength"), (dict(strength=-0.1), "strength"), (dict(strength=1.5), "strength"),
    (dict(strength=float("nan")), "strength"), (dict(strength="0.5"), "strength"), (dict(strength=True), "strength"),
    (dict(strength=0.1, num_inference_steps=5), "strength"),  # int(5 x 0.1) = 0 steps to run
    (dict(video=None), "video"), (dict(video=[]), "video"), (dict(video=np.zeros((0, 32, 32, 3))), "video"),
    (dict(video=torch.zeros(1, 0, 32, 32, 3)), "video"),
    (dict(video=[frames(1)[0], frames(1, 32, 48)[0]]), r"video\[1\]"),  # frames of different sizes
    (dict(video=frames(2, 30, 44)), "24x40"),  # not multiples of 8: says which sizes would work
    (dict(video=frames(2, 30, 44)), "video"),
    (dict(video=frames(c=1)), "video"), (dict(video=frames()[..., 0]), "video"),  # grey
    (dict(video=frames(c=4)), "video"), (dict(video=[Image.new("RGBA", (32, 32))] * 2), r"video\[0\]"),
    (dict(video=[Image.new("L", (32, 32))] * 2), r"video\[0\]"),
    (dict(video=frames(MAX_FRAMES + 1, 8, 8)), "MAX_FRAMES"),
    (dict(video=frames(dtype=np.float32) * 3), "video"),  # floats outside [0, 1]
    (dict(video=frames(dtype=np.float32) * np.nan), "video"),
    (dict(video=np.zeros((2, 32, 32, 3), bool)), "video"), (dict(video=3), "video"),
    (dict(video=torch.full((1, 4, 2, 4, 4), float("nan"))), "video"),  # latents
    (dict(video=np.stack([GOOD, GOOD])), "video"),  # 2 videos for 1 prompt
    (dict(latents=torch.zeros(1, 4, 3, 4, 4)), "latents"),  # noise of the wrong shape
    (dict(guidance_scale=-1.0), "guidance_scale"), (dict(output_type="gif"), "output_type"),
    (dict(generator=[torch.Generator()] * 2), "generator"), (dict(prompt=None), "prompt"),
]


@pytest.mark.parametrize("kwargs,name", BAD_VIDEOS)
def test_bad_video_to_video_input_names_the_argument(pipes, kwargs, name):
    args = dict(prompt="a", video=GOOD, strength=0.5, num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        pipes[1](**args)


def test_unreadable_and_missing_video_files(pipes, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="video: cannot read"):
        pipes[1]("a", video=str(broken))
    with pytest.raises(FileNotFoundError, match="video"):
        pipes[1]("a", video=str(tmp_path / "missing.mp4"))


BAD_IMAGES = [
    (dict(image=Image.new("L", (32, 32))), "grey"), (dict(image=Image.new("RGBA", (32, 32))), "alpha"),
    (dict(image=np.zeros((32, 32), np.uint8)), "image"), (dict(image=np.zeros((32, 32, 4), np.uint8)), "RGBA"),
    (dict(image=np.zeros((32, 32, 1), np.uint8)), "image"), (dict(image=np.zeros((2, 32, 32, 3), np.uint8)), "image"),
    (dict(image=np.zeros((32, 32, 3), np.uint8), height=64), "image"),  # not the video's size
    (dict(image=np.zeros((30, 32, 3), np.uint8)), "image: .*crop to 24x32 or resize to 32x32"),  # not a multiple of 8
    (dict(image=np.zeros((32, 32, 3), np.uint8), image_strength=1.5), "image_strength"),
    (dict(image=np.zeros((32, 32, 3), np.uint8), image_strength=float("nan")), "image_strength"),
    (dict(image="no/such/image.png"), "image"), (dict(image=3), "image"),
]


@pytest.mark.parametrize("kwargs,name", BAD_IMAGES)
def test_bad_image_to_video_input_names_the_argument(pipes, kwargs, name):
    args = dict(prompt="a", num_frames=2, num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises((ValueError, FileNotFoundError), match=name):
        pipes[0](**args)


def test_grey_image_file_is_refused(pipes, tmp_path):
    Image.new("L", (32, 32)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="image: a grey-scale image"):
        pipes[0]("a", image=str(tmp_path / "grey.png"), num_frames=2, num_inference_steps=2)


@pytest.mark.parametrize("argv,said", [
    (["--video", "v.mp4", "--strength", "1.5"], "--strength"), (["--upscale-strength", "0"], "--upscale-strength"),
    (["--upscale-with", "tiny", "--upscale-size", "1024by576"], "--upscale-size"),
    (["--video", "missing.mp4"], "--video"), (["--image", "missing.png"], "--image"),
])
def test_cli_bad_input_stops_before_loading(argv, said, capsys, monkeypatch):
    from t2vlab import __main__ as cli

    monkeypatch.setattr(cli, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as e:
        cli.main(["a red circle", *argv])
    assert e.value.code == 2 and said in capsys.readouterr().err
