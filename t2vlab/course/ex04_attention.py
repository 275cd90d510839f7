"""Notebook 04's exercises: attention from its formula, and the multi-head layer around it."""

from __future__ import annotations

import math

import torch

from ..attention import Attention, attention_math
from .core import Exercise, call, compare, generator, register


def attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v: q (B, H, N, d), k and v (B, H, M, d) -> (B, H, N, d)."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, N, M): how much query n looks at key m
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


# ------------------------------------------------------------- 04.multihead: the layer around the formula
def multihead_attention(attn, x, context=None):
    """What the layer ``attn`` (a t2vlab.attention.Attention) computes: x (B, N, query_dim), context (B, M, cross_dim)
    or None (self-attention) -> (B, N, query_dim). Its weights: attn.to_q, attn.to_k, attn.to_v, attn.to_out[0];
    attn.heads heads of attn.dim_head numbers each."""
    context = x if context is None else context
    B, N, M, H, d = x.shape[0], x.shape[1], context.shape[1], attn.heads, attn.dim_head
    q = attn.to_q(x).reshape(B, N, H, d).transpose(1, 2)         # (B, H, N, d): the heads as a batch axis
    k = attn.to_k(context).reshape(B, M, H, d).transpose(1, 2)   # (B, H, M, d)
    v = attn.to_v(context).reshape(B, M, H, d).transpose(1, 2)
    weights = (q @ k.transpose(-2, -1) / d**0.5).softmax(dim=-1)  # (B, H, N, M)
    out = (weights @ v).transpose(1, 2).reshape(B, N, H * d)     # the heads side by side again
    return attn.to_out[0](out)


def check_multihead(fn):
    torch.manual_seed(0)  # the layer's initial weights (nn.Linear draws from the global generator)
    attn = Attention(query_dim=12, heads=3, dim_head=4, cross_attention_dim=10).eval()  # H * d = 12 = query_dim
    g = generator(5)
    x, text = torch.randn(2, 9, 12, generator=g), torch.randn(2, 7, 10, generator=g)  # 9 pixels, 7 text tokens
    B, N, M, H, d = 2, 9, 7, 3, 4
    with torch.no_grad():
        q, k, v = attn.to_q(x), attn.to_k(text), attn.to_v(text)

        def heads(t, n):  # (B, n, H*d) -> (B, H, n, d)
            return t.reshape(B, n, H, d).transpose(1, 2)

        def merged(o):  # (B, H, N, d) -> the layer's output (B, N, query_dim)
            return attn.to_out[0](o.transpose(1, 2).reshape(B, N, H * d))

        want = attn(x, context=text)
        # float32 rounding of the same products in another order: compare's default tolerances
        compare(call(fn, attn, x, text), want, "multihead_attention(attn, x, text)", mistakes={
            "splitting the heads with reshape(B, H, N, d), no transpose: each 'head' then holds pieces of "
            "several tokens": attn.to_out[0](attention_math(q.reshape(B, H, N, d), k.reshape(B, H, M, d),
                                                            v.reshape(B, H, M, d)).reshape(B, N, H * d)),
            "without the output projection to_out[0]":
                attention_math(heads(q, N), heads(k, M), heads(v, M)).transpose(1, 2).reshape(B, N, H * d),
            "with the scale 1/sqrt(heads * dim_head) of the whole width, not 1/sqrt(dim_head) of one head":
                merged((heads(q, N) @ heads(k, M).transpose(-2, -1) / math.sqrt(H * d)).softmax(-1) @ heads(v, M)),
            "without splitting into heads (one head of width heads * dim_head)":
                attn.to_out[0](attention_math(q, k, v, scale=1 / math.sqrt(d))),
        })
        # self-attention: with no context, the keys and values come from x itself
        self_attn = Attention(query_dim=12, heads=3, dim_head=4).eval()
        compare(call(fn, self_attn, x, None), self_attn(x), "multihead_attention(attn, x) (self-attention, no context)")


register(Exercise("04.multihead", "multi-head attention: projections, heads, formula, output", "multihead_attention",
                  check_multihead, multihead_attention,
                  hint="q, k, v = to_q(x), to_k(context), to_v(context); (B, N, H*d) -> (B, H, N, d) by reshape then "
                       "transpose(1, 2); attention; back with transpose and reshape; then to_out[0]"))
