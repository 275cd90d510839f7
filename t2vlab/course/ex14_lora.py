"""Notebook 14's exercises: the LoRA layer's forward, and folding its correction into the weight."""

from __future__ import annotations

import torch
from torch import nn

from ..lora import LoRALinear
from .core import Exercise, call, compare, generator, register


def lora_forward(x, weight, bias, A, B, scaling):
    """y = x W^T + b + scaling * (x A^T) B^T: x (N, in), W (out, in), b (out,), A (r, in), B (out, r),
    scaling = alpha / r. The correction goes through the rank-r bottleneck: never form B A here."""
    return x @ weight.T + bias + scaling * (x @ A.T) @ B.T


def lora_layer(rank=2, alpha=6.0):
    """A LoRALinear 7 -> 5 with one adapter of rank 2 whose B is not zero (a trained one), drawn from a seed."""
    g = generator(15)
    base = nn.Linear(7, 5)
    with torch.no_grad():
        base.weight.copy_(torch.randn(5, 7, generator=g))
        base.bias.copy_(torch.randn(5, generator=g))
    layer = LoRALinear(base)
    layer.add_adapter("mine", rank, alpha)
    with torch.no_grad():
        layer.lora_A["mine"].weight.copy_(torch.randn(rank, 7, generator=g))
        layer.lora_B["mine"].weight.copy_(torch.randn(5, rank, generator=g))
    return layer, layer.lora_A["mine"].weight.detach(), layer.lora_B["mine"].weight.detach(), layer.scaling["mine"]


@torch.no_grad()
def check_lora_forward(fn):
    layer, A, B, s = lora_layer()
    x = torch.randn(4, 7, generator=generator(16))
    W, b = layer.weight.detach(), layer.bias.detach()
    compare(call(fn, x, W, b, A, B, s), layer(x), "lora_forward(x, W, b, A, B, scaling=3)", mistakes={
        "without the scaling alpha / r": x @ W.T + b + (x @ A.T) @ B.T,
        "scaling by alpha instead of alpha / r": x @ W.T + b + 6.0 * (x @ A.T) @ B.T,
        "without the bias": x @ W.T + s * (x @ A.T) @ B.T,
        "with the correction alone (the frozen layer's own W x + b left out)": s * (x @ A.T) @ B.T,
    })


def merge(weight, A, B, scaling):
    """The weight with the adapter folded in: W + scaling * B A, (out, in); after it one matmul does the work."""
    return weight + scaling * B @ A


@torch.no_grad()
def check_merge(fn):
    layer, A, B, s = lora_layer()
    W = layer.weight.detach().clone()
    layer.fuse()  # the package's own: W += scaling * B A, the old W kept for unfuse
    fused = layer.weight.detach().clone()
    layer.unfuse()
    compare(call(fn, W, A, B, s), fused, "merge(W, A, B, scaling=3)", mistakes={
        "without the scaling alpha / r": W + B @ A,
        "subtracting the correction": W - s * B @ A,
        "with the weight scaled too (scaling * (W + B A)): only the correction is scaled": s * (W + B @ A),
    })


register(Exercise("14.forward", "LoRALinear's forward", "lora_forward", check_lora_forward, lora_forward,
                  hint="the frozen layer x @ W.T + b, plus scaling * (x @ A.T) @ B.T"))
register(Exercise("14.merge", "folding the LoRA into W", "merge", check_merge, merge,
                  hint="B @ A is (out, r) @ (r, in) = (out, in), the shape of W"))
