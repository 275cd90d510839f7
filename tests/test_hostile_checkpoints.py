"""Hostile and broken checkpoint files (issue 9): nothing in a checkpoint runs code, and every refusal
names the file, the tensor or the config key, and says what to do.

Each test plants one kind of damage in a copy of the tiny checkpoint (or a small file of its own) and
checks the refusal; docs/reliability.md lists the files tried.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from t2vlab import TextToVideoPipeline
from t2vlab.checkpoint import CheckpointError, check_state_dict, load_weight_file
from t2vlab.text_encoder import CLIPTextEncoder
from t2vlab.unet import UNet3DConditionModel
from t2vlab.vae import AutoencoderKL
from t2vlab.weights import TINY_TEXT, TINY_UNET, TINY_VAE, make_tiny_checkpoint
from tests.helpers import CreatesAFile

UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", variants=(None,))


@pytest.fixture()
def copy(tiny, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny, folder)
    return folder


# ------------------------------------------------------------------------------------ pickled code
def plant_pickle(path, marker, how):
    state = {"conv_in.weight": torch.zeros(1), "payload": CreatesAFile(marker)}
    if how == "zip":  # torch.save's default format
        torch.save(state, path)
    elif how == "legacy":  # torch's pre-1.6 format
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named .bin
        path.write_bytes(pickle.dumps(state))


@pytest.mark.parametrize("how", ["zip", "legacy", "bare"])
def test_bin_with_pickled_code_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    plant_pickle(tmp_path / "evil.bin", marker, how)
    with pytest.raises(CheckpointError, match="safetensors") as e:
        load_weight_file(tmp_path / "evil.bin")
    assert "evil.bin" in str(e.value)
    assert not marker.exists(), "the pickle payload ran"


def test_pipeline_refuses_a_checkpoint_whose_only_weights_are_a_hostile_bin(copy, tmp_path):
    marker = tmp_path / "pwned"
    (copy / UNET_FILE).unlink()
    plant_pickle(copy / "unet" / "diffusion_pytorch_model.bin", marker, "zip")
    with pytest.raises(CheckpointError, match="safetensors"):
        TextToVideoPipeline.from_pretrained(copy)
    assert not marker.exists()


def test_sharded_index_cannot_point_outside_its_folder(copy):
    (copy / UNET_FILE).unlink()
    index = {"weight_map": {"conv_in.weight": "../../vae/diffusion_pytorch_model.safetensors"}}
    (copy / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a file name in the same folder"):
        UNet3DConditionModel.from_pretrained(copy, subfolder="unet")


# ------------------------------------------------------------------------------ broken safetensors
def damage(path, how):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    if how == "header-json":
        raw = raw[:8] + b"{not json" + raw[17:]
    elif how == "header-length":
        raw = (len(raw) * 2).to_bytes(8, "little") + raw[8:]
    elif how == "empty":
        raw = b""
    elif how == "truncated":
        raw = raw[:8 + n + (len(raw) - 8 - n) // 2]
    path.write_bytes(raw)
    return json.loads(path.read_bytes()[8:8 + n]) if how == "truncated" else None


@pytest.mark.parametrize("how", ["header-json", "header-length", "empty", "truncated"])
def test_damaged_safetensors_names_the_file_and_what_is_broken(copy, how):
    header = damage(copy / UNET_FILE, how)
    with pytest.raises(CheckpointError) as e:
        UNet3DConditionModel.from_pretrained(copy, subfolder="unet")
    msg = str(e.value)
    assert str(copy / UNET_FILE) in msg and "download it again" in msg
    if how == "truncated":  # the first tensor whose bytes are past the end is named
        body = (copy / UNET_FILE).stat().st_size - 8 - len(json.dumps(header)) - 1
        name = re.search(r"tensor '([^']+)' needs bytes", msg).group(1)
        assert header[name]["data_offsets"][1] > body - 64  # it really lies past the cut
    else:
        assert "header" in msg


def rewrite_unet(folder, change):
    state = load_file(str(folder / UNET_FILE))
    change(state)
    save_file(state, str(folder / UNET_FILE))


@pytest.mark.parametrize("how", ["loop", "dangling", "folder"])
def test_a_weight_file_that_cannot_be_read_is_named_for_what_it_is(copy, how):
    """Not "no weight file found" when one is there: a link that loops, a link to nothing, a folder."""
    path = copy / UNET_FILE
    path.unlink()
    if how == "loop":
        (copy / "unet" / "other").symlink_to(path.name)
        path.symlink_to("other")
    elif how == "dangling":
        path.symlink_to("/nonexistent/diffusion_pytorch_model.safetensors")
    else:
        path.mkdir()
    words = {"loop": "is a symbolic link that loops", "dangling": "is a symbolic link to '/nonexistent/",
             "folder": "is a folder, where a file is needed"}[how]
    with pytest.raises(OSError, match=re.escape(str(path)) + ".*" + re.escape(words)) as e:
        TextToVideoPipeline.from_pretrained(copy)
    assert "no weight file" not in str(e.value)
    with pytest.raises(OSError, match=re.escape(words)):
        load_weight_file(path)


@pytest.mark.parametrize("change,words", [
    (lambda s: s.pop("conv_in.bias"), ["missing", "conv_in.bias"]),
    (lambda s: s.update({"conv_in.weight": s["conv_in.weight"][:, :2].contiguous()}),
     ["shape", "conv_in.weight"]),
    (lambda s: s.update({"conv_in.weight": s["conv_in.weight"].to(torch.int32)}), ["conv_in.weight", "int32"]),
    (lambda s: s.update({"conv_out.bias": s["conv_out.bias"] > 0}), ["conv_out.bias", "bool"]),
    (lambda s: s.update({"conv_in.weight": s["conv_in.weight"].to(torch.int8)}), ["conv_in.weight", "int8"]),
])
def test_tensor_problems_name_the_file_and_the_tensor(copy, change, words):
    rewrite_unet(copy, change)
    with pytest.raises(CheckpointError) as e:
        UNet3DConditionModel.from_pretrained(copy, subfolder="unet")
    assert str(copy / UNET_FILE) in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_many_problems_list_eight_of_each_kind_and_count_the_rest():
    model = torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(6)])  # 12 tensors: 0.bias ... 5.weight
    with pytest.raises(CheckpointError) as e:
        check_state_dict(model, {"extra": torch.zeros(1)}, "f.safetensors")
    listed = "; ".join(f"{i}.{p}" for i in range(4) for p in ("bias", "weight"))
    assert str(e.value).endswith(f": 12 missing tensors: {listed} (and 4 more) | 1 unexpected tensors: extra")


def test_a_float16_tensor_in_a_float32_file_is_fine(copy):
    rewrite_unet(copy, lambda s: s.update({"conv_in.weight": s["conv_in.weight"].half()}))
    unet = UNet3DConditionModel.from_pretrained(copy, subfolder="unet")
    assert unet.conv_in.weight.dtype == torch.float32


def test_a_config_that_is_not_json_or_not_an_object(copy):
    (copy / "vae" / "config.json").write_text("{'single': quotes}")
    with pytest.raises(CheckpointError, match=re.escape(str(copy / "vae" / "config.json"))):
        AutoencoderKL.from_pretrained(copy, subfolder="vae")
    (copy / "vae" / "config.json").write_text("[1, 2]")
    with pytest.raises(TypeError, match="expected a dict"):
        AutoencoderKL.from_pretrained(copy, subfolder="vae")


# ---------------------------------------------------------------------------------- absurd configs
@pytest.fixture()
def no_allocation():
    """Fail if any parameter is created off the meta device: an absurd config must be refused first."""
    def hook(module, name, param):
        if param is not None and param.device.type != "meta":
            raise AssertionError(f"{type(module).__name__}.{name} was allocated before the config was refused")

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(hook)
    yield
    handle.remove()


ABSURD = [
    (UNet3DConditionModel, TINY_UNET, {"block_out_channels": (-32, 64, 64)}, "block_out_channels"),
    (UNet3DConditionModel, TINY_UNET, {"layers_per_block": 10**9}, "layers_per_block"),
    (UNet3DConditionModel, TINY_UNET, {"cross_attention_dim": "1024"}, "cross_attention_dim"),
    (UNet3DConditionModel, TINY_UNET, {"norm_eps": float("nan")}, "norm_eps"),
    (UNet3DConditionModel, TINY_UNET, {"block_out_channels": (65536,) * 3, "attention_head_dim": 64,
                                       "layers_per_block": 8}, "parameters"),
    (AutoencoderKL, TINY_VAE, {"latent_channels": 0}, "latent_channels"),
    (AutoencoderKL, TINY_VAE, {"layers_per_block": 10**9}, "layers_per_block"),
    (AutoencoderKL, TINY_VAE, {"block_out_channels": (16,) * 1000, "down_block_types": ("DownEncoderBlock2D",) * 1000,
                               "up_block_types": ("UpDecoderBlock2D",) * 1000}, "block_out_channels"),
    (AutoencoderKL, TINY_VAE, {"block_out_channels": (65536,) * 4, "norm_num_groups": 32}, "parameters"),
    (CLIPTextEncoder, TINY_TEXT, {"num_hidden_layers": 10**9}, "num_hidden_layers"),
    (CLIPTextEncoder, TINY_TEXT, {"num_hidden_layers": 100_000}, "num_hidden_layers"),
    (CLIPTextEncoder, TINY_TEXT, {"hidden_size": -1024}, "hidden_size"),
    (CLIPTextEncoder, TINY_TEXT, {"layer_norm_eps": "small"}, "layer_norm_eps"),
    (CLIPTextEncoder, TINY_TEXT, {"hidden_size": 65536, "intermediate_size": 65536, "num_hidden_layers": 256,
                                  "num_attention_heads": 1}, "parameters"),
]


@pytest.mark.parametrize("cls,base,change,word", ABSURD, ids=[f"{c.__name__}-{w}" for c, _, _, w in ABSURD])
def test_absurd_config_is_refused_before_allocation(cls, base, change, word, no_allocation):
    with pytest.raises(CheckpointError, match=word):
        cls.from_config({**base, **change})


def test_absurd_config_json_in_a_checkpoint_is_refused_before_allocation(copy, no_allocation):
    config = json.loads((copy / "unet" / "config.json").read_text())
    config["layers_per_block"] = 10**9
    (copy / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="layers_per_block"):
        TextToVideoPipeline.from_pretrained(copy)
