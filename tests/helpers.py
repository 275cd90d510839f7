"""Shared test helpers: random parameter filling and relative error."""

from __future__ import annotations

import torch


def randomize_(module: torch.nn.Module, seed=0, std=0.3) -> torch.nn.Module:
    """Fill every parameter with random values.

    The published architecture zero-initialises some layers (the temporal convolutions' last layer,
    the temporal transformers' output projection in the original code): left at zero, they would
    hide a wrong temporal path from a parity test. Norm scales are drawn around 1 so activations
    keep a sensible size through deep stacks.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            is_norm_scale = p.ndim == 1 and ("norm" in name) and name.endswith("weight")
            p.copy_((1.0 + 0.1 * r) if is_norm_scale else std * r / max(1.0, (p[0].numel() ** 0.5) / 3))
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error used by every parity test."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
