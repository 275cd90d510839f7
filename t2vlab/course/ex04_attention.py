"""Notebook 04's exercises: attention from its formula."""

from __future__ import annotations

import math

import torch

from ..attention import attention_math
from .core import Exercise, call, compare, generator, register


def attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v: q (B, H, N, d), k and v (B, H, M, d) -> (B, H, N, d)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, M): how much query n looks at key m
    weights = scores.softmax(dim=-1)  # each query's weights over the keys sum to 1
    return weights @ v


def check_attention(fn):
    g = generator(4)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, 7, 7))  # N = 5 queries, M = 7 keys
    scores = q @ k.transpose(-2, -1)
    compare(call(fn, q, k, v), attention_math(q, k, v), "attention(q, k, v)", mistakes={
        "without the 1/sqrt(d) scale": scores.softmax(-1) @ v,
        "with the softmax over the queries (dim=-2) instead of the keys": (scores / math.sqrt(8)).softmax(-2) @ v,
        "dividing by d instead of sqrt(d)": (scores / 8).softmax(-1) @ v,
    })


register(Exercise("04.attention", "attention from its formula", "attention", check_attention, attention,
                  hint="scores = q @ k^T / sqrt(head_dim), a softmax over the keys, then the weighted sum of v"))
