"""LoRA on the UNet (t2vlab.lora, t2vlab.lora_loading): the formula, the layers chosen, exact unload, and
errors that name the key or the argument. Parity with peft + diffusers: tests/parity/test_lora_parity.py.

Tolerance 1e-5 relative (float32): W x + s B A x computed as one or two matmuls differs by rounding only.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from t2vlab import TextToVideoPipeline, UNet3DConditionModel, atomic, lora
from t2vlab.lora import LoRAError, LoRALinear, add_lora, lora_targets, remove_lora
from t2vlab.weights import TINY_UNET
from tests.helpers import fails_half_way, rel_err


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNet3DConditionModel.from_config(TINY_UNET).eval()


def test_lora_linear_is_w_plus_scaled_b_a_and_starts_as_the_identity():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    x = torch.randn(3, 6)
    layer = LoRALinear(base)
    assert layer.weight is base.weight and set(dict(layer.named_parameters())) == {"weight", "bias"}
    layer.add_adapter("a", rank=2, alpha=6)
    assert torch.equal(layer(x), base(x))  # B = 0: a fresh adapter changes nothing
    nn.init.normal_(layer.lora_B["a"].weight)
    expected = base(x) + 3.0 * x @ (layer.lora_B["a"].weight @ layer.lora_A["a"].weight).T  # alpha / r = 3
    assert rel_err(layer(x), expected) < 1e-5
    layer.fuse()
    assert rel_err(layer(x), expected) < 1e-5
    layer.unfuse()
    assert torch.equal(layer.plain()(x), base(x))


def test_targets_split_spatial_and_temporal(unet):
    spatial, temporal = lora_targets(unet, "spatial"), lora_targets(unet, "temporal")
    both = lora_targets(unet, "both", feed_forward=True)
    assert spatial and temporal and not set(spatial) & set(temporal)
    assert all(".attentions." in p for p in spatial)
    assert all(".temp_attentions." in p or p.startswith("transformer_in.") for p in temporal)
    assert set(both) > set(spatial) | set(temporal) and any(p.endswith("ff.net.2") for p in both)
    with pytest.raises(LoRAError, match="train must be one of"):
        lora_targets(unet, "everything")


def test_remove_gives_back_the_plain_unet_exactly(unet):
    x, t, ctx = torch.randn(1, 4, 3, 8, 8), torch.tensor([500]), torch.randn(1, 7, 32)
    before = unet(x, t, ctx)
    names = set(unet.state_dict())
    params = add_lora(unet, lora_targets(unet), rank=4)
    with torch.no_grad():
        for p in params:
            p.normal_()
    assert not torch.equal(unet(x, t, ctx), before)
    remove_lora(unet)
    assert set(unet.state_dict()) == names and torch.equal(unet(x, t, ctx), before)


@pytest.mark.parametrize("rank", [0, 65, -1, 2.5])
def test_rank_zero_or_above_the_width_is_refused_naming_the_layer(unet, rank):
    path = "transformer_in.transformer_blocks.0.attn1.to_q"  # 64 -> 64: rank at most 64
    with pytest.raises(LoRAError, match=r"transformer_in\.transformer_blocks\.0\.attn1\.to_q.*rank"):
        add_lora(unet, [path], rank=rank)


@pytest.fixture
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_bad_lora_files_are_refused_naming_the_key(pipe, tmp_path):
    good = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    a, b = torch.zeros(2, 32), torch.zeros(32, 2)
    cases = {
        "names no layer": {"unet.down_blocks.9.attn1.to_q.lora_A.weight": a,
                           "unet.down_blocks.9.attn1.to_q.lora_B.weight": b},
        "do not fit layer": {f"{good}.lora_A.weight": torch.zeros(2, 31), f"{good}.lora_B.weight": b},
        "no lora_B partner": {f"{good}.lora_A.weight": a},
        "is not a LoRA weight": {f"{good}.weight": a},
        "another model": {"text_encoder.layers.0.q_proj.lora_A.weight": a},
        "names a Conv2d": {"unet.conv_in.lora_A.weight": a, "unet.conv_in.lora_B.weight": b},
    }
    for i, (message, tensors) in enumerate(cases.items()):
        path = write(tmp_path / f"{i}.safetensors", tensors)
        with pytest.raises(LoRAError, match=message) as e:
            pipe.load_lora_weights(path)
        assert str(path) in str(e.value)
        assert not pipe.get_list_adapters()["unet"]  # nothing half-loaded
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(LoRAError, match="not a readable"):
        pipe.load_lora_weights(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        pipe.load_lora_weights(tmp_path / "nothing")


def test_adapters_combine_switch_and_save(pipe, tmp_path):
    """Two adapters add; set_adapters picks; a saved and reloaded adapter gives the same frames."""
    args = dict(prompt="a red circle", num_frames=2, height=32, width=32, num_inference_steps=2)

    def run():
        return pipe(**args, generator=torch.Generator().manual_seed(0)).frames

    plain = run()
    for name, seed in (("a", 1), ("b", 2)):
        g = torch.Generator().manual_seed(seed)
        for p in add_lora(pipe.unet, lora_targets(pipe.unet), rank=2, alpha=4, adapter_name=name):
            p.data.copy_(0.5 * torch.randn(p.shape, generator=g))
    both = run()
    pipe.set_adapters("a")
    only_a = run()
    assert abs(only_a - both).max() > 1e-3 and abs(only_a - plain).max() > 1e-3
    pipe.save_lora_weights(tmp_path, adapter_name="a")
    with pytest.raises(LoRAError, match="name the adapter"):
        pipe.save_lora_weights(tmp_path / "x")
    pipe.unload_lora_weights()
    assert (run() == plain).all()
    pipe.load_lora_weights(tmp_path, adapter_name="again")
    assert abs(run() - only_a).max() < 1e-6
    with pytest.raises(LoRAError, match="already loaded"):
        pipe.load_lora_weights(tmp_path, adapter_name="again")


def test_an_interrupted_save_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / lora.LORA_WEIGHT_NAME
    lora.save_lora_file(path, {"a.lora_A.weight": torch.ones(2, 4)}, {"r": 2})
    old = path.read_bytes()
    monkeypatch.setattr(lora.safetensors.torch, "save_file", fails_half_way())
    with pytest.raises(OSError, match="injected"):
        lora.save_lora_file(path, {"a.lora_A.weight": torch.zeros(2, 4)}, {"r": 2})
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert not atomic.leftovers(tmp_path)
