"""The 3D UNet: loading errors that name what is wrong, and configs refused before allocating.
Parity with diffusers' UNet3DConditionModel is in tests/parity/test_unet_parity.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from t2vlab import UNet3DConditionModel
from t2vlab.checkpoint import CheckpointError

from .helpers import UNET_CONFIGS as CONFIGS
from .helpers import randomize_


# ----------------------------------------------------------------------------------- from_pretrained
@pytest.fixture()
def saved(tmp_path):
    """A UNet folder as save_pretrained writes it (that diffusers writes and reads the same layout is in
    tests/parity/test_unet_parity.py)."""
    ours = randomize_(UNet3DConditionModel.from_config(dict(CONFIGS["two-levels"], sample_size=8)), seed=7)
    ours.save_pretrained(tmp_path / "unet")
    return tmp_path / "unet"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        UNet3DConditionModel.from_pretrained(tmp_path / "nowhere")


def test_missing_weights_file_names_what_was_looked_for(saved):
    (saved / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        UNet3DConditionModel.from_pretrained(saved)


def test_missing_variant_suggests_the_fix(saved):
    with pytest.raises(FileNotFoundError, match="variant=None"):
        UNet3DConditionModel.from_pretrained(saved, variant="fp16")


def test_truncated_weights_file(saved):
    f = saved / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        UNet3DConditionModel.from_pretrained(saved)


def test_config_that_does_not_match_the_weights(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["block_out_channels"] = [32, 128]
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        UNet3DConditionModel.from_pretrained(saved)
    cfg["block_out_channels"], cfg["layers_per_block"] = [32, 64], 2
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing tensors"):
        UNet3DConditionModel.from_pretrained(saved)


@pytest.mark.parametrize("bad", [dict(block_out_channels=[-32, 64]), dict(layers_per_block=10**9),
                                 dict(down_block_types=["Nope", "DownBlock3D"]), dict(act_fn="gelu")])
def test_absurd_configs_are_refused_before_allocation(bad):
    with pytest.raises(CheckpointError):
        UNet3DConditionModel.from_config(dict(CONFIGS["two-levels"], **bad))


def test_bad_sample_shape():
    ours = UNet3DConditionModel.from_config(dict(CONFIGS["two-levels"], sample_size=8)).eval()
    with pytest.raises(ValueError, match="sample must be"):
        ours(torch.zeros(1, 4, 8, 8), 1, torch.zeros(1, 7, 16))
