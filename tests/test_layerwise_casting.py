"""Layerwise casting (t2vlab.layerwise_casting) on the UNet: which layers are stored low, that each runs in the
compute dtype and is stored low again after, that the numbers are those of the weights rounded once, the
parameter bytes, LoRA layers, switching off, and the argument checks. diffusers' own casting on the same
weights is the oracle in tests/parity/test_layerwise_casting_parity.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t2vlab import configs
from t2vlab.checkpoint import config_from_dict
from t2vlab.layerwise_casting import CAST_LAYERS, LayerwiseCastingError, parameter_bytes
from t2vlab.lora import LoRALinear, add_lora, lora_targets
from t2vlab.unet.model import UNet3DConditionModel, UNetConfig
from t2vlab.weights import TINY_UNET
from tests.helpers import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")
F8 = torch.float8_e4m3fn


def tiny_unet(seed=0):
    return randomize_(UNet3DConditionModel.from_config(TINY_UNET), seed=seed).eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([999, 10]), torch.randn(2, 7, 32, generator=g)


def is_skipped(name):
    """The default rule written out: a name with 'embed' or 'norm' in it (the UNet has no top-level proj_in)."""
    return "embed" in name or "norm" in name


def weight_layers(model):
    """The convolutions, linear and embedding layers, a LoRA layer's adapters (inside it) aside."""
    return {n: m for n, m in model.named_modules() if isinstance(m, CAST_LAYERS) and ".lora_" not in n}


def round_weights_once(model, storage):
    """The reference: every weight layer's own tensors rounded to ``storage`` and back, once."""
    with torch.no_grad():
        for name, m in weight_layers(model).items():
            if not is_skipped(name):
                for p in m.parameters(recurse=False):
                    p.copy_(p.to(storage).float())
    return model


def test_weight_layers_are_stored_low_norms_and_embeddings_are_not():
    unet = tiny_unet()
    unet.enable_layerwise_casting(F8, torch.float32)
    cast = 0
    for name, p in unet.named_parameters():
        owner = name.rsplit(".", 1)[0]
        expected = F8 if owner in weight_layers(unet) and not is_skipped(owner) else torch.float32
        assert p.dtype == expected, name
        cast += expected == F8
    assert cast > 0.5 * len(list(unet.parameters()))  # most tensors are cast: the rule is not vacuous
    assert unet.time_embedding.linear_1.weight.dtype == torch.float32  # an embedding's linear layer: skipped
    assert unet.dtype == torch.float32  # the model reports its compute dtype


def test_each_layer_runs_in_the_compute_dtype_and_rests_in_the_storage_dtype():
    unet = tiny_unet()
    unet.enable_layerwise_casting(F8, torch.float32)
    seen = {}
    layers = {n: m for n, m in weight_layers(unet).items() if not is_skipped(n)}

    def record(name):
        def hook(module, args):  # a pre-hook registered after the cast up: what the forward computes with
            seen[name] = module.weight.dtype
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    with torch.no_grad():
        unet(*inputs())
    for h in hooks:
        h.remove()
    assert set(seen) == set(layers) and set(seen.values()) == {torch.float32}  # every cast layer ran, cast up
    assert {m.weight.dtype for m in layers.values()} == {F8}  # and is stored low again after its forward


@pytest.mark.parametrize("storage", [F8, torch.float8_e5m2, torch.bfloat16])
def test_the_numbers_are_those_of_the_weights_rounded_once(storage):
    """Casting equals the plain model whose cast weights were rounded to the storage dtype once, exactly (the
    same float32 arithmetic on the same values), on every call: the round trip storage -> compute -> storage
    changes no bit, so repeated calls do not drift."""
    unet, rounded = tiny_unet(), round_weights_once(tiny_unet(), storage)
    with torch.no_grad():
        expected = rounded(*inputs())
        unet.enable_layerwise_casting(storage, torch.float32)
        first, second = unet(*inputs()), unet(*inputs())
        plain = tiny_unet()(*inputs())
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert (first - plain).abs().max() > 1e-3  # the rounding is in play: the comparison can fail


def test_parameter_bytes_drop_tiny_and_published():
    """float8 storage, float16 compute: 1 byte per cast weight, 2 per kept (norm, time embedding) weight.
    Tiny UNet (2.4 M parameters, 1.4% kept): 49.3% below float16, 74.6% below float32. Published UNet
    (1.41 B parameters, 0.18% kept; shapes only, on the meta device): 49.9% and 75.0%; the aims are >= 45%
    and >= 70%."""
    for cfg, drop16, drop32 in ((TINY_UNET, 0.493, 0.746), (configs.UNET, 0.499, 0.749)):
        with torch.device("meta"):
            unet = UNet3DConditionModel(config_from_dict(UNetConfig, dict(cfg))).to(torch.float16)
        fp16 = parameter_bytes(unet)
        n = sum(p.numel() for p in unet.parameters())
        assert fp16 == 2 * n
        unet.enable_layerwise_casting(F8, torch.float16)
        kept = sum(p.numel() for p in unet.parameters() if p.dtype == torch.float16)
        f8 = parameter_bytes(unet)
        assert f8 == 2 * kept + (n - kept)
        assert 1 - f8 / fp16 == pytest.approx(drop16, abs=1e-3)
        assert 1 - f8 / (4 * n) == pytest.approx(drop32, abs=1e-3)
        assert 1 - f8 / fp16 >= 0.45 and 1 - f8 / (4 * n) >= 0.70


def test_lora_layers_store_the_base_weight_low_and_keep_the_adapters():
    """A LoRALinear is cast as its base layer; the adapters stay in the compute dtype (float32 here), so the
    result is the rounded base weight plus the unrounded low-rank correction."""
    unet, rounded = tiny_unet(), tiny_unet()
    for model in (unet, rounded):
        add_lora(model, lora_targets(model, "both"), rank=2)
        randomize_(model, seed=5)
    round_weights_once(rounded, F8)
    with torch.no_grad():
        expected = rounded(*inputs())
        unet.enable_layerwise_casting(F8, torch.float32)
        got = unet(*inputs())
    loras = [m for m in unet.modules() if isinstance(m, LoRALinear)]
    assert loras and all(m.weight.dtype == F8 for m in loras)
    assert {p.dtype for m in loras for p in [*m.lora_A.parameters(), *m.lora_B.parameters()]} == {torch.float32}
    assert torch.equal(got, expected)


def test_disable_restores_the_dtypes_and_keeps_the_rounded_values():
    unet = tiny_unet()
    before = {k: v.dtype for k, v in unet.state_dict().items()}
    unet.enable_layerwise_casting(F8, torch.float32)
    at_rest = {k: v.float() for k, v in unet.state_dict().items()}
    unet.disable_layerwise_casting()
    after = unet.state_dict()
    assert {k: v.dtype for k, v in after.items()} == before
    assert all(torch.equal(after[k], at_rest[k]) for k in after)  # the values keep the storage rounding
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())
    unet.enable_layerwise_casting(torch.bfloat16, torch.float32)  # and it can be switched on again


def test_skip_patterns_and_classes():
    unet = tiny_unet()
    unet.enable_layerwise_casting(F8, torch.float32, skip_modules_pattern=("norm", "embed", r"^up_blocks\.2"),
                                  skip_modules_classes=(nn.Conv3d,))
    assert {p.dtype for p in unet.up_blocks[2].parameters()} == {torch.float32}
    assert {m.weight.dtype for m in unet.modules() if isinstance(m, nn.Conv3d)} == {torch.float32}
    assert unet.up_blocks[1].resnets[0].conv1.weight.dtype == F8


def test_argument_checks_name_the_argument():
    unet = tiny_unet()
    with pytest.raises(ValueError, match="storage_dtype must be a floating-point torch.dtype"):
        unet.enable_layerwise_casting(torch.int8)
    with pytest.raises(ValueError, match="compute_dtype must be a floating-point torch.dtype"):
        unet.enable_layerwise_casting(F8, "float16")
    with pytest.raises(ValueError, match="storage_dtype=torch.float16 has values that compute_dtype=torch.bfloat16"):
        unet.to(torch.bfloat16).enable_layerwise_casting(torch.float16, torch.bfloat16)
    with pytest.raises(ValueError, match="compute_dtype=torch.float16, but the tensors that stay .* torch.bfloat16"):
        unet.enable_layerwise_casting(F8, torch.float16)
    with pytest.raises(ValueError, match="skip_modules_pattern must be regular expressions"):
        unet.enable_layerwise_casting(F8, torch.bfloat16, skip_modules_pattern=("norm", "(unclosed"))
    assert getattr(unet, "_layerwise_casting", None) is None and unet.conv_in.weight.dtype == torch.bfloat16
    unet.enable_layerwise_casting(F8)  # compute dtype: the model's
    assert unet.dtype == torch.bfloat16 and unet.conv_in.weight.dtype == F8
    with pytest.raises(LayerwiseCastingError, match="already on"):
        unet.enable_layerwise_casting(F8)
