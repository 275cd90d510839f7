"""``pipe.save_pretrained``: the whole pipeline as one folder in the published layout, read back exactly (every
tensor equal, the same frames), variants beside each other, .bin with safe_serialization=False, what runs is what
is saved (a fused LoRA inside the weights, a pipeline from the original layout, absent components), and the folder
written whole or not at all (``t2vlab.atomic.atomic_merge``). That diffusers loads it too: tests/parity."""

from __future__ import annotations

import json

import pytest
import torch

from t2vlab import DPMSolverMultistepScheduler, TextToVideoPipeline, VideoToVideoPipeline
from t2vlab.atomic import MARKER, leftovers
from t2vlab.lora import LoRAError, add_lora, lora_layers, lora_targets
from t2vlab.original import make_tiny_original_checkpoint
from tests.helpers import tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")
KW = dict(num_frames=2, num_inference_steps=3, output_type="pt")


def files(folder):
    """The files of a component folder, less the marker that says t2vlab wrote it (t2vlab.atomic.MARKER)."""
    assert (folder / MARKER).is_file()
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=6)


def frames(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW).frames


def same_tensors(a, b):
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), (name, k)


def test_a_saved_pipeline_loads_back_exactly(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline" and index["unet"] == ["diffusers", "UNet3DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["scheduler"][1] == "DDIMScheduler"
    assert files(folder / "unet") == ["config.json", "diffusion_pytorch_model.safetensors"]
    back = TextToVideoPipeline.from_pretrained(folder)
    same_tensors(back, pipe)
    assert torch.equal(frames(back), frames(pipe))


def test_a_variant_joins_the_folder_beside_the_plain_weights(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "saved")
    (folder / "README.md").write_text("mine")  # a file t2vlab did not write stays
    half = TextToVideoPipeline.from_pipe(tiny_pipe(seed=6)).to(torch.float16)
    half.save_pretrained(folder, variant="fp16")
    assert files(folder / "text_encoder") == ["config.json", "model.fp16.safetensors",
                                                                           "model.safetensors"]
    assert (folder / "README.md").read_text() == "mine"
    same_tensors(TextToVideoPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16), half)
    same_tensors(TextToVideoPipeline.from_pretrained(folder), pipe)  # the plain weights as they were


def test_safe_serialization_false_writes_bin_files_read_with_weights_only(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert (folder / "text_encoder" / "pytorch_model.bin").is_file()
    state = torch.load(folder / "vae" / "diffusion_pytorch_model.bin", weights_only=True)  # tensors only
    assert state.keys() == pipe.vae.state_dict().keys()
    same_tensors(TextToVideoPipeline.from_pretrained(folder), pipe)


def test_a_fused_lora_is_saved_inside_the_weights_and_an_unfused_one_refused(tmp_path):
    pipe = tiny_pipe(seed=6)
    add_lora(pipe.unet, lora_targets(pipe.unet), rank=2, adapter_name="style")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lora_layers(pipe.unet).values():
            layer.lora_B["style"].weight.normal_(0, 0.3, generator=g)
    with pytest.raises(LoRAError, match=r"act unfused \(style\); call pipe.fuse_lora\(\)"):
        pipe.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and leftovers(tmp_path) == []
    pipe.fuse_lora()
    with_lora = frames(pipe)
    back = TextToVideoPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "fused"))
    assert not lora_layers(back.unet)  # a plain UNet whose weights hold the LoRA
    assert torch.equal(frames(back), with_lora)


def test_a_pipeline_from_the_original_layout_is_saved_in_the_published_one(tmp_path):
    original = TextToVideoPipeline.from_pretrained(make_tiny_original_checkpoint(tmp_path / "original"))
    folder = original.save_pretrained(tmp_path / "published")
    config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["pad_token"] == "!"  # the published folders' pad token (id 0, as OpenCLIP pads)
    back = TextToVideoPipeline.from_pretrained(folder)
    same_tensors(back, original)
    assert torch.equal(back.tokenizer("a red circle").input_ids, original.tokenizer("a red circle").input_ids)
    assert torch.equal(frames(back), frames(original))


def test_absent_components_are_saved_as_diffusers_writes_them_and_load_as_none(pipe, tmp_path):
    bare = TextToVideoPipeline.from_pipe(pipe, text_encoder=None, tokenizer=None)
    bare.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    folder = bare.save_pretrained(tmp_path / "bare")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert not (folder / "text_encoder").exists() and index["scheduler"][1] == "DPMSolverMultistepScheduler"
    back = TextToVideoPipeline.from_pretrained(folder)
    assert back.text_encoder is None and back.tokenizer is None
    assert isinstance(back.scheduler, DPMSolverMultistepScheduler)
    assert VideoToVideoPipeline.reference_class == "VideoToVideoSDPipeline"
    v2v = VideoToVideoPipeline.from_pipe(pipe).save_pretrained(tmp_path / "v2v")
    assert json.loads((v2v / "model_index.json").read_text())["_class_name"] == "VideoToVideoSDPipeline"
    TextToVideoPipeline.from_pretrained(v2v)  # the same five components: either class loads it


def test_a_failed_save_leaves_no_folder_and_an_existing_one_as_it_was(pipe, tmp_path, monkeypatch):
    def fail(self, folder):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(type(pipe.scheduler), "save_pretrained", fail)  # the last component: the rest is written
    with pytest.raises(OSError, match="injected"):
        pipe.save_pretrained(tmp_path / "new")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    monkeypatch.undo()
    folder = pipe.save_pretrained(tmp_path / "old")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.setattr(type(pipe.scheduler), "save_pretrained", fail)
    with pytest.raises(OSError, match="injected"):
        tiny_pipe(seed=7).save_pretrained(folder)  # other weights: had it half-happened, bytes would differ
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert leftovers(tmp_path) == []
