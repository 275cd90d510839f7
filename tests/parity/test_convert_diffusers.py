"""``python -m t2vlab convert`` writes a folder that diffusers and transformers load: their
UNet3DConditionModel, AutoencoderKL and CLIPTextModel, read from the converted folder, give the numbers
t2vlab gives when it reads the original files.

Tolerance: 1e-5 relative, float32 (the same weights; the implementations differ in operation order only).
"""

from __future__ import annotations

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from t2vlab import TextToVideoPipeline  # noqa: E402
from t2vlab.__main__ import main  # noqa: E402
from t2vlab.original import load_original, make_tiny_original_checkpoint  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

pytestmark = pytest.mark.parity
TOL = 1e-5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    original = make_tiny_original_checkpoint(root / "original", seed=3)
    assert main(["convert", str(original), str(root / "converted"), "--quiet"]) == 0
    return original, root / "converted", load_original(original)


def test_unet_loads_in_diffusers_with_the_same_numbers(folders):
    _, converted, ours = folders
    theirs = diffusers.UNet3DConditionModel.from_pretrained(converted, subfolder="unet").eval()
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)
    with torch.no_grad():
        expected = theirs(x, torch.tensor([981, 21]), context).sample
        got = ours["unet"](x, torch.tensor([981, 21]), context)
    assert rel_err(got, expected) < TOL


def test_vae_loads_in_diffusers_with_the_same_numbers(folders):
    _, converted, ours = folders
    theirs = diffusers.AutoencoderKL.from_pretrained(converted, subfolder="vae").eval()
    z = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs.decode(z).sample
        got = ours["vae"].decode(z)
    assert rel_err(got, expected) < TOL


def test_text_encoder_and_tokenizer_load_in_transformers_with_the_same_numbers(folders):
    _, converted, ours = folders
    theirs = transformers.CLIPTextModel.from_pretrained(converted, subfolder="text_encoder").eval()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(converted, subfolder="tokenizer")
    prompt = "a panda playing a guitar"
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids.tolist() == ours["tokenizer"](prompt).input_ids.tolist()  # OpenCLIP's ids: padded with 0
    with torch.no_grad():
        expected = theirs(ids).last_hidden_state
        got = ours["text_encoder"](ids)
    assert rel_err(got, expected) < TOL


def test_diffusers_pipeline_generates_what_t2vlab_generates_from_the_original_folder(folders):
    original, converted, _ = folders
    pipe = diffusers.TextToVideoSDPipeline.from_pretrained(converted)
    pipe.set_progress_bar_config(disable=True)
    ours = TextToVideoPipeline.from_pretrained(original)
    ours.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, num_frames=2, height=32, width=32, output_type="np")
    expected = pipe("a panda playing a guitar", generator=torch.Generator().manual_seed(0), **kw).frames
    got = ours("a panda playing a guitar", generator=torch.Generator().manual_seed(0), **kw).frames
    assert torch.from_numpy(got).shape == torch.from_numpy(expected).shape
    assert rel_err(torch.from_numpy(got), torch.from_numpy(expected)) < 1e-4
