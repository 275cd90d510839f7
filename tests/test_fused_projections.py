"""``fuse_qkv_projections``: one matmul for self-attention's q, k, v (cross-attention's k, v), the same numbers,
unfused exactly; the fused copy kept true to the layers (weights changed in place, a LoRA put on after fusing,
gradients), and LoRA-adapted projections refused.

Tolerance: 1e-6 relative (the issue's bound). A fused matmul computes each output as the same dot product, but
over a wider matrix the BLAS kernel may block the sum differently: float32 rounding (eps 1.2e-7) per layer.
Measured on this CPU: bit-identical at the tiny sizes (0.0); a wrong split of [q | k | v] or a missing bias is O(1).
That the fused path really runs is its own test (the projections are not called)."""

from __future__ import annotations

import pytest
import torch

from t2vlab.attention import Attention
from t2vlab.lora import add_lora, lora_layers, lora_targets
from tests.helpers import randomize_, rel_err, tiny_pipe

pytestmark = pytest.mark.usefixtures("one_thread")
RTOL = 1e-6


@pytest.fixture
def pipe():
    p = tiny_pipe(seed=8)
    randomize_(p.vae, seed=9, std=0.2)
    return p


def unet_inputs(unet, frames=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, frames, 8, 8, generator=g)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([500, 500]), text


def test_fused_unet_and_vae_give_the_same_numbers_and_unfusing_restores_every_weight(pipe):
    unet, vae = pipe.unet, pipe.vae
    before = {k: v.clone() for k, v in {**unet.state_dict(), **vae.state_dict()}.items()}
    x, t, text = unet_inputs(unet)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        plain, plain_image = unet(x, t, text), vae.decode(vae.encode(image).mean)
        pipe.fuse_qkv_projections()
        assert all(m.fused_weight is not None for m in (*unet.attention_modules(), *vae.modules())
                   if isinstance(m, Attention))
        assert unet.state_dict().keys() == {k for k in before if k in unet.state_dict()}  # the copy is not saved
        fused, fused_image = unet(x, t, text), vae.decode(vae.encode(image).mean)
    assert rel_err(fused, plain) <= RTOL
    assert rel_err(fused_image, plain_image) <= RTOL
    pipe.unfuse_qkv_projections()
    after = {**unet.state_dict(), **vae.state_dict()}
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # bit for bit
    with torch.no_grad():
        assert torch.equal(unet(x, t, text), plain)


def test_fused_attention_runs_one_matmul_instead_of_the_projections(pipe):
    calls = []
    for m in pipe.unet.attention_modules():
        for name in ("to_q", "to_k", "to_v"):
            getattr(m, name).register_forward_hook(lambda mod, i, o, n=name, c=m.is_cross_attention: calls.append(
                (c, n)))
    pipe.unet.fuse_qkv_projections()
    with torch.no_grad():
        pipe.unet(*unet_inputs(pipe.unet))
    assert calls and set(calls) == {(True, "to_q")}  # self-attention: none of the three; cross: q alone


def test_the_pipelines_frames_are_the_same_fused(pipe):
    kw = dict(num_frames=3, num_inference_steps=3, output_type="pt")
    plain = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw).frames
    pipe.fuse_qkv_projections()
    fused = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw).frames
    assert rel_err(fused, plain) <= RTOL


def test_the_fused_copy_follows_weights_changed_in_place_and_gradients_reach_the_layers(pipe):
    unet = pipe.unet
    x, t, text = unet_inputs(unet)
    unet.fuse_qkv_projections()
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    with torch.no_grad():
        attn.to_v.weight.mul_(2.0)  # in place, after fusing
        fused = unet(x, t, text)
    unet.unfuse_qkv_projections()
    with torch.no_grad():
        assert rel_err(fused, unet(x, t, text)) <= RTOL

    def grads(fuse):
        unet.zero_grad()
        unet.fuse_qkv_projections() if fuse else unet.unfuse_qkv_projections()
        unet(x, t, text).square().mean().backward()
        return attn.to_k.weight.grad.clone()

    assert rel_err(grads(True), grads(False)) <= 1e-5  # a gradient sums over more terms: 1e-5
    assert attn.to_k.weight.grad.abs().max() > 0


def test_lora_adapted_projections_are_refused_and_a_lora_put_on_after_fusing_acts(pipe):
    unet = pipe.unet
    x, t, text = unet_inputs(unet)
    add_lora(unet, lora_targets(unet, "spatial"), rank=2, adapter_name="style")
    with pytest.raises(ValueError, match=r"down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1 has a "
                                         r"LoRALinear projection"):
        unet.fuse_qkv_projections()
    assert all(m.fused_weight is None for m in unet.attention_modules())  # checked before any was fused
    pipe.unload_lora_weights()
    unet.fuse_qkv_projections()
    add_lora(unet, lora_targets(unet, "spatial"), rank=2, adapter_name="style")
    with torch.no_grad():
        for layer in lora_layers(unet).values():
            layer.lora_B["style"].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        with_lora_fused = unet(x, t, text)
        unet.unfuse_qkv_projections()
        with_lora = unet(x, t, text)
    assert rel_err(with_lora_fused, with_lora) <= RTOL


def test_the_fused_unet_still_traces_as_one_graph(pipe):
    """The compiled path (t2vlab.compiled) holds whole with fused projections: no graph break."""
    torch._dynamo.reset()
    pipe.unet.fuse_qkv_projections()
    x, t, text = unet_inputs(pipe.unet)
    with torch.no_grad():
        explained = torch._dynamo.explain(pipe.unet)(x, t, text)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
