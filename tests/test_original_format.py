"""The original ModelScope layout (issue 18): loading it, converting it, and reading its pickles safely.

Every checkpoint here is written by t2vlab itself in the original layout (``make_tiny_original_checkpoint``:
configuration.json, a UNet state dict .pth, a Lightning-style VQGAN .pth, an OpenCLIP .bin). That the
layout is ModelScope's and OpenCLIP's own is shown in tests/parity/ against their code; this file checks
what does not need them: round trips, generation, file safety, error messages, atomic conversion.
"""

from __future__ import annotations

import gc
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from t2vlab import TextToVideoPipeline
from t2vlab.__main__ import main
from t2vlab.checkpoint import CheckpointError, ModelBase
from t2vlab.original import (
    FILES,
    TINY_SIZES,
    convert_original,
    is_original,
    load_original,
    make_tiny_original_checkpoint,
    tiny_models,
)
from t2vlab.safe_pickle import LazyTensor, Opaque, SafeReader, read_pickle
from t2vlab.text_encoder import CLIPTextEncoder
from t2vlab.unet import UNet3DConditionModel
from t2vlab.vae import AutoencoderKL
from t2vlab.weights import recommended_settings

PROMPT = "a panda playing a guitar"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_original_checkpoint(tmp_path_factory.mktemp("orig") / "original", seed=1)


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    return convert_original(tiny, tmp_path_factory.mktemp("conv") / "converted", progress=False)


@pytest.fixture()
def copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "original")


# --------------------------------------------------------------------------------- names and shapes
def test_writing_and_reading_the_original_layout_is_the_identity(tiny):
    models = tiny_models(TINY_SIZES, seed=1)  # what the fixture's make_tiny_original_checkpoint(seed=1) wrote
    loaded = load_original(tiny)
    for name, model in models.items():
        a, b = model.state_dict(), loaded[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert loaded["vae"].config.block_out_channels == (32, 32, 32, 32)  # read from the tensors' shapes
    assert loaded["text_encoder"].config.num_hidden_layers == 2  # the file has 3 blocks: the last is dropped


def test_the_files_hold_the_original_names_and_shapes(tiny):
    unet = read_pickle(tiny / FILES["unet"])
    assert unet["input_blocks.0.1.proj_in.weight"].ndim == 3  # transformer_in: a 1x1 Conv1d there
    assert unet["input_blocks.1.1.proj_in.weight"].ndim == 2  # spatial transformers: Linear in both
    assert "input_blocks.1.0.temopral_conv.conv1.2.weight" in unet  # sic
    vae = read_pickle(tiny / FILES["vae"])["state_dict"]
    assert vae["first_stage_model.decoder.mid.attn_1.q.weight"].shape[-2:] == (1, 1)  # a 1x1 Conv2d there
    clip = read_pickle(tiny / FILES["text_encoder"])
    assert clip["transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 64, 64)  # q, k, v fused
    assert "transformer.resblocks.2.ln_1.weight" in clip  # one more block than the encoder uses


def test_pipeline_recognises_the_original_layout_and_uses_its_scheduler_and_tokenizer(tiny):
    assert is_original(tiny)
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.steps_offset == 1
    rec = pipe.recommended
    assert (rec.scheduler, rec.num_inference_steps, rec.guidance_scale, rec.num_frames) == ("ddim", 50, 9.0, 8)
    assert (rec.height, rec.width) == (256, 256)  # sample_size 32: the original pipeline's default size
    assert pipe.tokenizer("wow!!!").input_ids[0, :3].tolist() == [49406, 2781, 995]  # '!!!' as OpenCLIP has it
    assert recommended_settings(tiny).scheduler == "ddim"


def test_generation_from_the_original_folder_equals_generation_from_its_converted_copy(tiny, converted):
    kw = dict(num_inference_steps=2, num_frames=2, height=32, width=32, output_type="pt")
    videos = []
    for folder in (tiny, converted):
        pipe = TextToVideoPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        videos.append(pipe(PROMPT, negative_prompt="blurry", generator=torch.Generator().manual_seed(0), **kw).frames)
    assert videos[0].shape == (1, 2, 32, 32, 3)
    assert torch.equal(videos[0], videos[1])


def test_converted_folder_is_the_published_layout(converted):
    index = json.loads((converted / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet3DConditionModel"] and index["_class_name"] == "TextToVideoSDPipeline"
    for sub in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json"):
        assert (converted / sub).is_file(), sub
    assert not list(converted.parent.glob(".converted.*"))  # no temporary folder left behind


def test_convert_fp16_writes_half_precision(tiny, tmp_path):
    assert main(["convert", str(tiny), str(tmp_path / "half"), "--fp16", "--quiet"]) == 0
    weights = load_file(tmp_path / "half" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}


def test_convert_refuses_to_overwrite_unless_asked(tiny, converted, capsys):
    before = (converted / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main(["convert", str(tiny), str(converted), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (converted / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError):
        convert_original(tiny, converted, progress=False)


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("where", ["parent", "same", "inside"])
def test_convert_never_replaces_or_writes_into_its_source(tiny, tmp_path, capsys, where):
    """``convert models/ms-original models --overwrite`` once deleted models/ whole (the source with it): an OUT
    that holds the source, is it, or lies inside it is refused before anything is read or written."""
    models = tmp_path / "models"
    src = shutil.copytree(tiny, models / "ms-original")
    (models / "notes.txt").write_text("beside the checkpoint")
    out = {"parent": models, "same": src, "inside": src / "converted"}[where]
    before = tree(tmp_path)
    assert main(["convert", str(src), str(out), "--overwrite", "--quiet"]) == 2
    how = {"parent": "contains", "same": "is", "inside": "is inside"}[where]
    assert f"{how} the input" in capsys.readouterr().err
    assert tree(tmp_path) == before  # byte for byte, and nothing new
    with pytest.raises(ValueError, match=how):
        convert_original(src, out, overwrite=True, progress=False)


def test_convert_overwrite_replaces_only_a_folder_t2vlab_wrote_and_says_what(tiny, converted, tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "my-video.mp4").write_bytes(b"not t2vlab's")
    assert main(["convert", str(tiny), str(theirs), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not written by t2vlab" in err and "1 files in 0 folders" in err and "my-video.mp4" in err
    assert (theirs / "my-video.mp4").read_bytes() == b"not t2vlab's" and sorted(tmp_path.iterdir()) == [theirs]
    ours = shutil.copytree(converted, tmp_path / "ours")  # a copy of a folder t2vlab wrote: it has the marker
    assert (ours / ".t2vlab-written").is_file()
    assert main(["convert", str(tiny), str(ours), "--overwrite", "--quiet"]) == 0
    assert f"replacing {ours} (a folder t2vlab wrote: " in capsys.readouterr().err


def test_convert_interrupted_midway_leaves_no_output_folder(tiny, tmp_path, monkeypatch):
    real = AutoencoderKL.save_pretrained

    def interrupted(self, *args, **kwargs):  # the UNet is written; Ctrl-C while the VAE is being written
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(AutoencoderKL, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_original(tiny, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary sibling


def test_convert_holds_one_component_at_a_time(tiny, tmp_path, monkeypatch):
    real, alive = ModelBase.save_pretrained, []

    def models_alive():
        gc.collect()
        return sum(isinstance(o, (UNet3DConditionModel, AutoencoderKL, CLIPTextEncoder)) and
                   o.device.type != "meta" for o in gc.get_objects())

    def counting(self, *args, **kwargs):
        alive.append(models_alive() - before)
        return real(self, *args, **kwargs)

    before = models_alive()  # models other tests left alive (widgets keep pipelines) are not the convert's
    monkeypatch.setattr(ModelBase, "save_pretrained", counting)
    convert_original(tiny, tmp_path / "out", progress=False)
    assert alive == [1, 1, 1]  # when each component is written, it is the only model the convert holds


# --------------------------------------------------------------------------------- pickles that run code
class CreatesAFile:
    """Unpickling this calls open(path, "w"): the file appearing would mean pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder"])
def test_a_planted_payload_in_each_file_never_runs(copy, tmp_path, component, legacy):
    marker = tmp_path / "pwned"
    path = copy / FILES[component]
    obj = torch.load(path, weights_only=True)
    if component == "vae":  # a training checkpoint: objects beside the state dict, as Lightning saves them
        obj["callbacks"] = {"ModelCheckpoint": CreatesAFile(marker)}
    else:
        obj["payload"] = CreatesAFile(marker)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    with pytest.warns(UserWarning, match="not tensors") if component != "vae" else _nothing():
        pipe = TextToVideoPipeline.from_pretrained(copy)  # loads: the payload is read as an inert placeholder
    assert not marker.exists(), "the pickle payload ran"
    assert pipe.unet is not None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_payload_disguised_as_a_tensor_is_refused_and_named(copy, tmp_path):
    marker = tmp_path / "pwned"
    path = copy / FILES["unet"]
    state = torch.load(path, weights_only=True)
    state["out.2.weight"] = CreatesAFile(marker)
    torch.save(state, path)
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=r"out\.2\.weight.*conv_out\.weight"):
        TextToVideoPipeline.from_pretrained(copy)
    assert not marker.exists()


def test_safe_reader_builds_placeholders_and_reads_only_kept_tensors(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.arange(6.0).reshape(2, 3)[:, 1:]}, "hook": CreatesAFile(marker)},
               tmp_path / "ckpt.pth")
    obj = SafeReader(tmp_path / "ckpt.pth").load()
    assert isinstance(obj["hook"], Opaque) and ".open" in repr(obj["hook"])
    assert isinstance(obj["state_dict"]["w"], LazyTensor) and obj["state_dict"]["w"].shape == (2, 2)
    assert torch.equal(obj["state_dict"]["w"].load(), torch.tensor([[1.0, 2.0], [4.0, 5.0]]))  # a strided view
    assert not marker.exists()


# --------------------------------------------------------------------------------- damaged files are named
@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder"])
def test_a_truncated_file_is_named(copy, component):
    path = copy / FILES[component]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=FILES[component] + ".*truncated"):
        TextToVideoPipeline.from_pretrained(copy)


TENSOR_PROBLEMS = {  # the file, its tensor, the tensor's new value (None: removed), the refusal naming both
    "missing": ("vae", "first_stage_model.decoder.mid.attn_1.k.weight", None,
                r"VQGAN_autoencoder\.pth.*missing.*decoder\.mid\.attn_1\.k\.weight "
                r"\(t2vlab: decoder\.mid_block\.attentions\.0\.to_k\.weight\)"),  # in both layouts' names
    "wrong shape": ("text_encoder", "transformer.resblocks.1.mlp.c_fc.weight", torch.zeros(100, 64),
                    r"open_clip_pytorch_model\.bin.*resblocks\.1\.mlp\.c_fc\.weight: "
                    r"file \(100, 64\) vs expected \(128, 64\)"),
    "unexpected": ("unet", "fps_embedding.0.weight", torch.zeros(4, 4),
                   r"unexpected tensors: fps_embedding\.0\.weight"),
}


@pytest.mark.parametrize("problem", list(TENSOR_PROBLEMS))
def test_a_tensor_problem_is_named_with_its_file(copy, problem):
    component, name, value, message = TENSOR_PROBLEMS[problem]
    path = copy / FILES[component]
    obj = torch.load(path, weights_only=True)
    state = obj["state_dict"] if component == "vae" else obj  # the VAE's file is a training checkpoint
    if value is None:
        del state[name]
    else:
        state[name] = value
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message):
        TextToVideoPipeline.from_pretrained(copy)


class HandMadeRecord:
    """A tensor record written by hand: torch's own rebuild function with arguments of our choosing (what a
    corrupted or crafted file holds); torch.load builds it or fails with its TypeError/RuntimeError."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (torch.zeros(4).storage(), *self.args, False, {}))


HAND_MADE = {"negative offset": (-5, (4,), (1,)), "string size": (0, ("a",), (1,)), "float offset": (1.5, (2,), (1,)),
             "negative size": (0, (-3,), (1,)), "size and stride of different lengths": (0, (2, 2), (1,)),
             "more elements than the storage": (0, (64, 32), (32, 1)), "no size": (0, None, (1,))}


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("record", list(HAND_MADE))
def test_a_hand_made_tensor_record_is_a_checkpoint_error_naming_file_and_key(copy, record, legacy):
    """Never torch's TypeError ("set_() received an invalid combination of arguments") or RuntimeError
    ("Tensor: invalid storage offset -5"): the file and the tensor's key are named."""
    path = copy / FILES["unet"]
    state = torch.load(path, weights_only=True)
    state["out.2.weight"] = HandMadeRecord(*HAND_MADE[record])
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"text2video_pytorch_model\.pth: tensor 'out\.2\.weight': "):
        TextToVideoPipeline.from_pretrained(copy)


def test_a_configuration_json_that_names_a_path_outside_the_folder_is_refused(copy):
    config = json.loads((copy / "configuration.json").read_text())
    config["model"]["model_args"]["ckpt_unet"] = "../elsewhere.pth"
    (copy / "configuration.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="ckpt_unet"):
        TextToVideoPipeline.from_pretrained(copy)


def test_an_unsupported_configuration_is_refused_by_key(copy):
    config = json.loads((copy / "configuration.json").read_text())
    config["model"]["model_cfg"]["unet_num_heads"] = 4
    (copy / "configuration.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unet_num_heads=4"):
        TextToVideoPipeline.from_pretrained(copy)


def test_a_configuration_json_of_another_model_is_not_taken_for_the_original_layout(tmp_path):
    (tmp_path / "configuration.json").write_text(json.dumps({"framework": "pytorch", "task": "chat"}))
    assert not is_original(tmp_path)
    with pytest.raises(CheckpointError, match="not ModelScope's text-to-video"):
        TextToVideoPipeline.from_pretrained(tmp_path)


def test_the_package_never_imports_its_oracles():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "t2vlab"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+(modelscope|open_clip|diffusers)\b", p.read_text(), re.M)]
    assert offenders == []
