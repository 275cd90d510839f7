"""A pipeline as diffusers' set of components: ``pipe.components``, ``Pipeline(**pipe.components)``, ``from_pipe``,
components given or left out by name (``None`` where a call does not need them, a clear error naming the one it
does), and ``torch_dtype`` as a dict with a default."""

from __future__ import annotations

import pytest
import torch

from t2vlab import DDIMScheduler, TextToVideoPipeline, VideoToVideoPipeline
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")
KW = dict(num_frames=2, num_inference_steps=3, output_type="pt")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=4)  # the UNet re-drawn: no zero-initialised layer hides a component


def frames(pipe, prompt="a red circle", **kw):
    return pipe(prompt, generator=torch.Generator().manual_seed(0), **{**KW, **kw}).frames


# ------------------------------------------------------------------------------ components by name
def test_components_are_the_five_by_diffusers_names_and_rebuild_either_pipeline(pipe):
    parts = pipe.components
    assert set(parts) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert all(parts[name] is getattr(pipe, name) for name in parts)
    rebuilt = TextToVideoPipeline(**parts)
    rebuilt.set_progress_bar_config(disable=True)
    assert torch.equal(frames(rebuilt), frames(pipe))
    v2v = VideoToVideoPipeline(**pipe.components)
    assert all(getattr(v2v, name) is part for name, part in parts.items())
    back = TextToVideoPipeline.from_pipe(v2v)  # and back: the same models, the same frames
    back.set_progress_bar_config(disable=True)
    assert torch.equal(frames(back), frames(pipe))


def test_from_pipe_replaces_components_by_name(pipe):
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    other = TextToVideoPipeline.from_pipe(pipe, scheduler=ddim)
    assert other.scheduler is ddim and other.unet is pipe.unet and pipe.scheduler is not ddim
    with pytest.raises(ValueError, match="'transformer' is not a component of this pipeline"):
        TextToVideoPipeline.from_pipe(pipe, transformer=None)
    with pytest.raises(ValueError, match="unet=None: a pipeline cannot run without its unet"):
        TextToVideoPipeline.from_pipe(pipe, unet=None)


def test_from_pretrained_takes_components_by_name_and_loads_only_the_rest(tiny, monkeypatch):
    import t2vlab.text_encoder

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although text_encoder=None was given")

    monkeypatch.setattr(t2vlab.text_encoder.CLIPTextEncoder, "from_pretrained", classmethod(refuse))
    bare = TextToVideoPipeline.from_pretrained(tiny, text_encoder=None, tokenizer=None)
    assert bare.text_encoder is None and bare.tokenizer is None and bare.vae is not None
    assert TextToVideoPipeline._optional_components == ("text_encoder", "tokenizer", "vae")


# --------------------------------------------------------------------------- optional components
def test_without_a_vae_the_pipeline_returns_latents_and_names_the_vae_for_frames(pipe):
    full = pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**KW, "output_type": "latent"})
    bare = TextToVideoPipeline.from_pipe(pipe, vae=None)
    assert set(bare.models) == {"unet", "text_encoder"} and bare.vae_scale_factor == 8
    latents = bare("a red circle", generator=torch.Generator().manual_seed(0), **{**KW, "output_type": "latent"})
    assert torch.equal(latents.frames, full.frames)
    with pytest.raises(ValueError, match="output_type='pt': this pipeline has no vae to decode"):
        frames(bare)
    with pytest.raises(ValueError, match="image: encoding the image: this pipeline has no vae"):
        bare("a red circle", image=torch.rand(64, 64, 3), **{**KW, "output_type": "latent"})
    for switch in (bare.enable_vae_slicing, bare.enable_vae_tiling, bare.disable_vae_slicing,
                   bare.disable_vae_tiling):
        switch()  # nothing to switch: no error
    assert bare.to("cpu") is bare and "vae" not in repr(bare)


def test_video_to_video_without_a_vae_takes_latents_and_names_the_vae_for_pixels(pipe):
    v2v = VideoToVideoPipeline.from_pipe(pipe, vae=None)
    z = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    out = v2v("a red circle", video=z, strength=0.5, num_inference_steps=4, output_type="latent").frames
    assert out.shape == z.shape
    with pytest.raises(ValueError, match="video: encoding its frames .*this pipeline has no vae"):
        v2v("a red circle", video=torch.rand(1, 2, 64, 64, 3), output_type="latent")


# ----------------------------------------------------------------------------- torch_dtype as a dict
def test_a_dict_torch_dtype_puts_each_model_in_its_dtype_and_the_pipeline_runs(tiny):
    mixed = TextToVideoPipeline.from_pretrained(tiny, torch_dtype={"unet": torch.bfloat16, "default": torch.float64})
    assert (mixed.unet.dtype, mixed.vae.dtype, mixed.text_encoder.dtype) == (torch.bfloat16, torch.float64,
                                                                             torch.float64)
    mixed.set_progress_bar_config(disable=True)
    video = frames(mixed)  # the UNet runs in its own dtype on the text's embeddings
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    alone = TextToVideoPipeline.from_pretrained(tiny, torch_dtype={"vae": torch.float16})  # no default: float32
    assert (alone.unet.dtype, alone.vae.dtype, alone.text_encoder.dtype) == (torch.float32, torch.float16,
                                                                             torch.float32)


@pytest.mark.parametrize("torch_dtype, match", [
    ({"tokenizer": torch.float16}, "the key 'tokenizer' holds no weights"),
    ({"transformer": torch.float16}, "the key 'transformer' is no component of this pipeline"),
    ({"unet": torch.int8}, r"torch_dtype\['unet'\] must be a floating torch.dtype.*torch.int8"),
    ({"default": "float16"}, r"torch_dtype\['default'\] must be a floating torch.dtype.*'float16'"),
    (torch.int64, "torch_dtype must be a floating torch.dtype"),
])
def test_a_bad_torch_dtype_is_refused_by_name_before_loading(tiny, torch_dtype, match):
    with pytest.raises(ValueError, match=match):
        TextToVideoPipeline.from_pretrained(tiny, torch_dtype=torch_dtype)
