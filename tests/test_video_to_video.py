"""Video-to-video, image-to-video and the upscale pass on the tiny checkpoint (random weights): the video
input forms, the VAE's sliced encode, the strength arithmetic, the order of the random draws, the
first-frame anchor, the CLI's two passes and where the weights are while they run. Equality with
diffusers' VideoToVideoSDPipeline is in tests/parity/test_video_to_video_parity.py; bad input in
tests/test_reliability_video_to_video.py. Videos are 2-3 frames of 32x48 pixels, 1-3 steps.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from t2vlab import DDIMScheduler, TextToVideoPipeline
from t2vlab.frames import batch_to_frames
from t2vlab.inputs import video_input
from t2vlab.unet import UNet3DConditionModel
from t2vlab.vae import AutoencoderKL
from t2vlab.video import export_to_video
from t2vlab.video_to_video import VideoToVideoPipeline, resize_video
from t2vlab.weights import make_tiny_checkpoint

H, W = 32, 48

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one thread for tiny tensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", variants=(None,))


@pytest.fixture()
def v2v(tiny):
    pipe = VideoToVideoPipeline.from_pretrained(tiny)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip(frames=3, h=H, w=W, seed=0):
    """A uint8 video (F, H, W, 3): a smooth random picture sliding right by 3 pixels a frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8 + frames, generator=g),
                                           size=(h, w + 3 * frames), mode="bilinear")[0]
    video = [base[:, :, 3 * (frames - f):3 * (frames - f) + w] for f in range(frames)]
    return (torch.stack(video).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def restyle(pipe, video, seed=0, **kw):
    args = dict(strength=0.5, num_inference_steps=4)
    args.update(kw)
    return pipe("a red circle moving left", video=video, generator=torch.Generator().manual_seed(seed), **args).frames


# ------------------------------------------------------------------------------------------ video forms
def test_every_video_form_gives_the_same_result(v2v):
    u8 = clip()
    expected = restyle(v2v, u8)
    assert expected.shape == (1, 3, H, W, 3)
    f32 = u8.astype(np.float32) / 255
    forms = {"float array": f32, "list of float frames": list(f32), "list of uint8 frames": list(u8),
             "tuple of frames": tuple(u8), "list of PIL images": [Image.fromarray(f) for f in u8],
             "uint8 tensor": torch.from_numpy(u8), "float tensor": torch.from_numpy(u8).float() / 255,
             "list of tensors": list(torch.from_numpy(u8)), "batch of one (.frames)": f32[None]}
    for name, video in forms.items():
        assert np.array_equal(restyle(v2v, video), expected), name


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_a_path_reads_the_file(v2v, tmp_path, ext):
    """A path gives what its frames give (read here with imageio directly, not through t2vlab)."""
    u8 = clip()
    path = export_to_video(u8, tmp_path / f"clip{ext}")
    if ext == ".gif":
        frames = iio.imread(path, index=None, plugin="pillow", mode="RGB")
    else:
        frames = iio.imread(path, index=None, plugin="FFMPEG")
    assert frames.shape == u8.shape and np.abs(frames.astype(float) - u8).mean() < 8  # the file holds the clip
    expected = restyle(v2v, frames)
    assert np.array_equal(restyle(v2v, path), expected)
    assert np.array_equal(restyle(v2v, Path(path)), expected)


def test_video_input_keeps_float_pixels_as_they_are():
    """No 8-bit rounding of float input: the reference pipeline encodes float frames as given."""
    f = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    assert np.array_equal(video_input(f)[0], f)
    assert video_input(list(f)).shape == (1, 2, 8, 8, 3)
    assert video_input(np.stack([f, f])).shape == (2, 2, 8, 8, 3)  # a batch of videos


# --------------------------------------------------------------------------------------- the VAE, sliced
def test_encode_with_slicing_equals_encode_without(v2v, monkeypatch):
    vae = v2v.vae
    frames = torch.from_numpy(video_input(np.stack([clip(3), clip(3, seed=1)])))  # (2, 3, H, W, 3)
    vae.disable_slicing()
    whole = vae.encode_video(frames, torch.Generator().manual_seed(0))
    mean = vae.encode_video(frames, sample=False)
    seen = []
    monkeypatch.setattr(vae.encoder, "forward", lambda x, f=vae.encoder.forward: seen.append(len(x)) or f(x))
    vae.enable_slicing(1)
    sliced = vae.encode_video(frames, torch.Generator().manual_seed(0))
    assert seen == [1] * 6  # one frame at a time really
    # the same numbers up to float32 rounding of convolutions run on 1 image instead of 6: measured 2e-7 of the
    # largest value here (5e-7 with the full-size VAE); 1e-6 allows that and fails on any real difference
    assert (sliced - whole).abs().max() <= 1e-6 * whole.abs().max()
    assert whole.shape == (2, 4, 3, H // 8, W // 8)
    # frame order: video b's frame f is what encoding that one picture gives
    one = vae.encode(frames[1, 2].permute(2, 0, 1)[None] * 2 - 1).mean * vae.config.scaling_factor
    assert (mean[1, :, 2] - one[0]).abs().max() <= 1e-5 * one.abs().max()
    assert not torch.equal(whole, mean)  # sample=True draws


def test_pipeline_slicing_switch_covers_encode_and_decode(v2v):
    expected = restyle(v2v, clip())
    v2v.enable_vae_slicing()
    assert v2v.vae.use_slicing
    # the same video up to float32 rounding: the sliced encoder runs its convolutions on one picture instead of
    # three (2e-7 of the latents' scale, test above), and two denoising steps and the decoder carry that on;
    # measured 0.6e-5 to 1.05e-5 in [0, 1] pixels depending on the thread count. 1e-4 is 40x below one 8-bit
    # level (1/255) and far below what a slicing bug gives (frames swapped or dropped: 1e-1 and more)
    assert np.abs(restyle(v2v, clip()) - expected).max() < 1e-4


# ---------------------------------------------------------------------------------- the method's pieces
def test_from_pipe_shares_the_models_and_gives_the_same_video(tiny, v2v):
    t2v = TextToVideoPipeline.from_pretrained(tiny)
    t2v.set_progress_bar_config(disable=True)
    shared = VideoToVideoPipeline.from_pipe(t2v)
    assert isinstance(shared, VideoToVideoPipeline)
    assert shared.unet is t2v.unet and shared.vae is t2v.vae and shared.text_encoder is t2v.text_encoder
    assert shared.progress_bar_config == {"disable": True}
    assert np.array_equal(restyle(shared, clip()), restyle(v2v, clip()))


@pytest.mark.parametrize("strength,steps,ran", [(0.5, 4, 2), (0.6, 10, 6), (0.99, 5, 4), (1.0, 3, 3), (0.34, 3, 1)])
def test_strength_runs_the_last_int_steps_x_strength_timesteps(v2v, strength, steps, ran):
    seen = []
    v2v("a", video=clip(2), strength=strength, num_inference_steps=steps, output_type="latent",
        callback_on_step_end=lambda p, i, t, kw: seen.append(int(t)) or {})
    full = v2v.scheduler.timesteps.tolist()
    assert len(full) == steps and seen == full[steps - ran:]


def test_the_noise_is_drawn_with_the_frames_folded_into_the_batch(v2v):
    """``latents`` is the noise; the drawn one is randn(B*F, C, h, w) unfolded, as in the reference."""
    v2v.scheduler = DDIMScheduler.from_config(v2v.scheduler.config)  # eta 0: no other draw
    z = torch.randn(1, 4, 3, H // 8, W // 8, generator=torch.Generator().manual_seed(1))
    noise = batch_to_frames(torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(5)), 3)
    kw = dict(video=z, strength=0.5, num_inference_steps=4, output_type="latent")
    given = v2v("a", latents=noise, generator=torch.Generator().manual_seed(99), **kw).frames
    drawn = v2v("a", generator=torch.Generator().manual_seed(5), **kw).frames
    assert torch.equal(given, drawn)
    other = v2v("a", latents=noise.transpose(2, 3).reshape(noise.shape), **kw).frames  # another layout
    assert not torch.allclose(other, drawn)


def test_the_posterior_sample_is_drawn_first(v2v):
    """Pixels: the first draw samples the VAE's posterior, the second is the noise (the reference's order)."""
    v2v.scheduler = DDIMScheduler.from_config(v2v.scheduler.config)
    u8 = clip(2)
    g = torch.Generator().manual_seed(3)
    z = v2v.encode_video(torch.from_numpy(video_input(u8)), g)  # draw 1, with the same generator...
    noise = batch_to_frames(torch.randn(2, 4, H // 8, W // 8, generator=g), 2)  # ...then draw 2
    kw = dict(strength=0.5, num_inference_steps=4, output_type="latent")
    by_hand = v2v("a", video=z, latents=noise, **kw).frames
    assert torch.equal(v2v("a", video=u8, generator=torch.Generator().manual_seed(3), **kw).frames, by_hand)


def test_one_video_for_several_prompts_and_a_generator_each(v2v):
    u8 = clip(2)
    out = v2v(["a", "b"], video=u8, strength=0.5, num_inference_steps=4,
              generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]).frames
    alone = v2v("b", video=u8, strength=0.5, num_inference_steps=4, generator=[torch.Generator().manual_seed(2)]).frames
    assert out.shape == (2, 2, H, W, 3)
    # the second video depends on its own generator only (up to float32 rounding between batch sizes)
    assert np.abs(out[1] - alone[0]).max() < 1e-4 and np.abs(out[0] - alone[0]).max() > 1e-3
    pair = v2v(["a", "b"], video=np.stack([u8, clip(2, seed=4)]), strength=0.5, num_inference_steps=4).frames
    assert pair.shape == (2, 2, H, W, 3)


def test_output_types_and_return_dict(v2v):
    kw = dict(video=clip(2), strength=0.5, num_inference_steps=2)
    assert v2v("a", output_type="latent", **kw).frames.shape == (1, 4, 2, H // 8, W // 8)
    assert torch.is_tensor(v2v("a", output_type="pt", **kw).frames)
    pil = v2v("a", output_type="pil", **kw).frames
    assert len(pil) == 1 and pil[0][0].size == (W, H)
    assert v2v("a", return_dict=False, **kw)[0].shape == (1, 2, H, W, 3)


# ---------------------------------------------------------------------------------------- image-to-video
@pytest.fixture()
def t2v(tiny):
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, **kw):
    args = dict(num_frames=3, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    args.update(kw)
    return pipe("a red circle moving left", **args).frames


def test_image_to_video_first_frame_is_the_image_through_the_vae(t2v):
    image = clip(1)[0]
    frames = generate(t2v, image=image)
    assert frames.shape == (1, 3, H, W, 3)  # height and width from the image
    pixels = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    round_trip = t2v.decode_latents(t2v.encode_video(pixels, sample=False))[0, 0].numpy()
    # the last step sets the first frame's latents to the image's: the frame is the VAE's round trip of the
    # image (up to float32 rounding of a decode of 3 frames against one)
    assert np.abs(frames[0, 0] - round_trip).max() < 1e-5
    assert np.abs(frames[0, 1] - round_trip).max() > 1e-3  # the other frames are generated


def test_image_anchor_follows_the_noise_level_at_every_step(t2v):
    image = torch.from_numpy(clip(1)[0].astype(np.float32) / 255)
    z = t2v.encode_video(image[None, None], sample=False)
    start = t2v.prepare_latents(1, 3, H, W, torch.float32, "cpu", torch.Generator().manual_seed(0))
    eps0 = start[:, :, :1] / t2v.scheduler.init_noise_sigma
    seen = []

    def check(pipe, i, t, kw):
        ts = pipe.scheduler.timesteps
        want = z if i == len(ts) - 1 else pipe.scheduler.add_noise(z, eps0, ts[i + 1:i + 2])
        seen.append((kw["latents"][:, :, :1] - want).abs().max().item())
        return {}

    generate(t2v, image=image, num_inference_steps=4, callback_on_step_end=check)
    assert len(seen) == 4 and max(seen) < 1e-6


def test_image_strength_zero_is_plain_text_to_video(t2v):
    image = clip(1)[0]
    plain = generate(t2v, height=H, width=W)
    assert np.array_equal(generate(t2v, image=image, image_strength=0.0), plain)
    half = generate(t2v, image=image, image_strength=0.5)
    full = generate(t2v, image=image)
    assert not np.array_equal(half, plain) and not np.array_equal(half, full)


def test_image_forms_agree(t2v, tmp_path):
    image = clip(1)[0]
    Image.fromarray(image).save(tmp_path / "first.png")
    expected = generate(t2v, image=image, num_frames=2)
    for form in (Image.fromarray(image), torch.from_numpy(image), image.astype(np.float32) / 255,
                 str(tmp_path / "first.png")):
        assert np.array_equal(generate(t2v, image=form, num_frames=2), expected), type(form)


# --------------------------------------------------------------------------------------------- upscale
def test_resize_video():
    out = resize_video(clip(2), 64, 96)
    assert out.shape == (1, 2, 64, 96, 3) and 0 <= out.min() and out.max() <= 1
    same = resize_video(clip(2), H, W)
    assert (same[0] - torch.from_numpy(clip(2)) / 255).abs().max() < 1e-5  # same size: the frames as they are


def read(path):
    return iio.imread(path, index=None, plugin="FFMPEG")


def test_cli_upscale_and_restyle(tiny, tmp_path, capsys):
    from t2vlab.__main__ import main

    out = tmp_path / "up.mp4"
    assert main(["a red circle", "--out", str(out), "--model", str(tiny), "--upscale-with", str(tiny),
                 "--upscale-size", "96x64", "--steps", "2", "--frames", "2", "--upscale-strength", "0.5"]) == 0
    assert read(out).shape == (2, 64, 96, 3)  # WxH: 96 wide, 64 high
    assert "upscaling to 96x64" in capsys.readouterr().out
    again = tmp_path / "restyled.mp4"
    assert main(["a blue circle", "--video", str(out), "--out", str(again), "--model", str(tiny),
                 "--strength", "0.5", "--steps", "2"]) == 0
    assert read(again).shape == (2, 64, 96, 3)
    first = tmp_path / "first.png"
    Image.fromarray(clip(1)[0]).save(first)
    assert main(["a red circle", "--image", str(first), "--out", str(tmp_path / "i.mp4"), "--model", str(tiny),
                 "--steps", "2", "--frames", "2"]) == 0
    assert read(tmp_path / "i.mp4").shape == (2, H, W, 3)


@pytest.mark.parametrize("offload", [True, False])
def test_upscale_never_has_both_unets_on_the_device(tiny, tmp_path, monkeypatch, offload):
    """Where the weights are while each model runs, on a machine without a GPU: the GPU is simulated by a
    device that ``Module.to`` records instead of moving to (the pipelines compute on the CPU). With
    --offload only the running model is there; without it (the whole pipeline is placed on the GPU) the
    first pipeline leaves before the second arrives."""
    from t2vlab.__main__ import main
    from t2vlab.text_encoder import CLIPTextEncoder
    from t2vlab.vae import Decoder, Encoder

    where, real_to = {}, torch.nn.Module.to

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and device.type == "cuda":
            where[self] = "gpu"
            return self
        if device is not None:
            where[self] = "cpu"
        return real_to(self, *args, **kwargs)

    def simulated_offload(self, device="cuda"):
        self.to("cpu")
        self.offload_device = device

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setattr(TextToVideoPipeline, "enable_model_cpu_offload", simulated_offload)
    if not offload:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the CLI then places pipelines on "cuda"
    monkeypatch.setattr(TextToVideoPipeline, "device", property(lambda self: torch.device("cpu")))
    models = (UNet3DConditionModel, AutoencoderKL, CLIPTextEncoder)
    runs = []

    def before(module, args):
        if isinstance(module, (UNet3DConditionModel, CLIPTextEncoder, Encoder, Decoder)):
            owner = next(m for m in where if isinstance(m, models) and any(s is module for s in m.modules()))
            on_gpu = [type(m).__name__ for m, w in where.items() if w == "gpu"]
            runs.append((type(owner).__name__, where[owner], on_gpu))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(before)
    try:
        assert main(["a red circle", "--out", str(tmp_path / "v.mp4"), "--model", str(tiny), "--upscale-with",
                     str(tiny), "--steps", "2", "--frames", "2", "--upscale-strength", "0.5"]
                    + (["--offload"] if offload else [])) == 0
    finally:
        handle.remove()
    kinds = [r[0] for r in runs]
    assert kinds.count("UNet3DConditionModel") == 2 + 1  # 2 steps, then int(0.5 x 2) = 1
    assert "CLIPTextEncoder" in kinds and "AutoencoderKL" in kinds
    for name, place, on_gpu in runs:
        assert place == "gpu" and on_gpu.count("UNet3DConditionModel") <= 1, (name, place, on_gpu)
        if offload:
            assert on_gpu == [name], (name, on_gpu)  # it, and nothing else
    assert sum(isinstance(m, UNet3DConditionModel) for m in where) == 2  # both UNets were seen
    if offload:
        assert all(w == "cpu" for w in where.values())  # and everything is back in CPU memory
