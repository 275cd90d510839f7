"""Gradient checkpointing in the UNet (``unet.enable_gradient_checkpointing()``): the same loss and gradients
as without, each level really recomputed in the backward pass, and nothing changed without gradients.

Tolerance 1e-6 relative (the issue's): the recomputation repeats the same float32 operations in the same
order with the same dropout draws, so the numbers should agree to rounding or better. The lower peak memory
on a mid-size UNet is a benchmark (benchmarks/finetune_memory.py, docs/benchmarks.md), not a test.
"""

from __future__ import annotations

import torch

from t2vlab import UNet3DConditionModel
from t2vlab.lora import add_lora, lora_targets
from t2vlab.weights import TINY_UNET
from tests.helpers import randomize_, rel_err


def loss_and_grads(unet, params, seed=0):
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 7, 32, generator=g)
    target = torch.randn(2, 4, 3, 8, 8, generator=g)
    torch.manual_seed(seed)  # dropout (temporal convolutions, p = 0.1) draws from the global generator
    loss = torch.nn.functional.mse_loss(unet(x, torch.tensor([10, 700]), ctx), target)
    grads = torch.autograd.grad(loss, params)
    return loss, grads


def test_checkpointing_gives_the_same_loss_and_gradients_and_recomputes_each_level():
    unet = randomize_(UNet3DConditionModel.from_config(TINY_UNET), seed=0, std=0.2).train()  # dropout live
    lora = add_lora(unet, lora_targets(unet, "both"), rank=4)
    with torch.no_grad():
        for p in lora:
            p.normal_(std=0.1)
    params = [p for p in unet.parameters()]  # the base weights and the LoRA's
    calls = []
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        block.register_forward_pre_hook(lambda m, i: calls.append(m))  # pre: recomputation stops early

    loss, grads = loss_and_grads(unet, params)
    plain_calls, calls[:] = len(calls), []
    unet.enable_gradient_checkpointing()
    loss_ckpt, grads_ckpt = loss_and_grads(unet, params)
    assert len(calls) == 2 * plain_calls  # every level ran again in the backward pass
    assert rel_err(loss_ckpt, loss) <= 1e-6
    for a, b in zip(grads_ckpt, grads):
        assert rel_err(a, b) <= 1e-6
    assert any(b.abs().max() > 0 for b in grads)

    calls[:] = []
    with torch.no_grad():  # no gradients recorded: plain forward, once per level
        unet(torch.zeros(1, 4, 2, 8, 8), 5, torch.zeros(1, 7, 32))
    assert len(calls) == plain_calls == 7  # 3 down, mid, 3 up
    unet.disable_gradient_checkpointing()
    assert not unet.gradient_checkpointing
