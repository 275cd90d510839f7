"""Attention: the one function every attention layer of the model computes with, and the UNet's and VAE's layer.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

:func:`attention` computes it in one of three interchangeable ways (the "backend"), equal up to float rounding:

- ``"sdpa"``   PyTorch's ``scaled_dot_product_attention`` (fused kernels on GPU; the default).
- ``"math"``   the formula above written out, for reading and for drawing attention maps.
- ``"sliced"`` the formula, a few (batch x head) slices at a time, so the (N x N) score matrix of
               only ``slice_size`` slices exists at once: less peak memory, a little slower.

The layer :class:`Attention` (the UNet's transformers, the VAE's mid-block) has the published checkpoint's
parameter names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``). The text encoder's layer has CLIP's names
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), so it is its own module (``text_encoder.CLIPAttention``),
calling the same :func:`attention`.

Fused projections (diffusers' ``fuse_qkv_projections``): q, k, v = x [Wq; Wk; Wv]^T split in three, one matmul
with three times the columns instead of three; in cross-attention q comes from x and k, v = context [Wk; Wv]^T.
Each output is the same dot product, so the numbers agree up to the matmul's float rounding. The fused matrix is
a copy kept beside the layers (a buffer, not saved); the layers themselves are untouched, so unfusing is exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import one_of, positive_int

BACKENDS = ("sdpa", "math", "sliced")


def causal_bias(n, m, device, dtype):
    """Additive mask (n, m): 0 where query i may see key j (j <= i + m - n), -inf elsewhere."""
    keep = torch.ones(n, m, dtype=torch.bool, device=device).tril(diagonal=m - n)
    return torch.zeros(n, m, device=device, dtype=dtype).masked_fill(~keep, float("-inf"))


def attention_probs(q, k, *, causal=False, mask=None, scale=None):
    """softmax(q k^T * scale + mask): the attention map (..., N, M), each row summing to 1."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        scores = scores + causal_bias(scores.shape[-2], scores.shape[-1], q.device, scores.dtype)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


def attention_math(q, k, v, *, causal=False, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v, shapes (..., N, d) x (..., M, d) -> (..., N, d)."""
    return attention_probs(q, k, causal=causal, mask=mask, scale=scale) @ v


def attention(q, k, v, *, backend="sdpa", slice_size=None, causal=False, mask=None, scale=None):
    """Scaled dot-product attention over tensors shaped (batch, heads, tokens, head_dim).

    ``mask`` (optional) is additive and broadcastable to (batch, heads, N, M); ``causal`` lets
    query i see keys 0..i only.
    """
    if backend == "sdpa":
        if causal and mask is not None:  # SDPA takes one or the other: fold causality into the mask
            mask, causal = mask + causal_bias(q.shape[-2], k.shape[-2], q.device, q.dtype), False
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    if backend == "math":
        return attention_math(q, k, v, causal=causal, mask=mask, scale=scale)
    if backend == "sliced":
        b, h, n = q.shape[:3]
        qf, kf, vf = (t.reshape(b * h, *t.shape[2:]) for t in (q, k, v))
        mf = None if mask is None else mask.expand(b, h, *mask.shape[-2:]).reshape(b * h, *mask.shape[-2:])
        step = slice_size or 1
        out = qf.new_empty(b * h, n, vf.shape[-1])
        for i in range(0, b * h, step):
            s = slice(i, i + step)
            out[s] = attention_math(qf[s], kf[s], vf[s], causal=causal, scale=scale,
                                    mask=None if mf is None else mf[s])
        return out.reshape(b, h, n, -1)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


class Attention(nn.Module):
    """Multi-head attention: self-attention when ``context`` is None, else cross-attention.

    x (B, N, query_dim), context (B, M, cross_dim) -> (B, N, query_dim)
    """

    def __init__(self, query_dim, heads=8, dim_head=64, cross_attention_dim=None, bias=False,
                 out_bias=True):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])
        self.is_cross_attention = cross_attention_dim is not None  # k, v from the text (fused: k, v only)
        self.register_buffer("fused_weight", None, persistent=False)  # [Wq; Wk; Wv] or [Wk; Wv] while fused
        self.register_buffer("fused_bias", None, persistent=False)
        self.fused_from = None  # what the fused copy was made from (fused_key): layers, weights, versions
        self.backend, self.slice_size = "sdpa", None
        self.keep_probs = False  # when True, forward computes the formula and keeps the map in .last_probs
        self.last_probs = None

    def set_backend(self, backend="sdpa", slice_size=None):
        one_of("backend", backend, BACKENDS)
        if slice_size is not None:
            slice_size = positive_int("slice_size", slice_size)
        self.backend, self.slice_size = backend, slice_size

    def split_heads(self, t):  # (B, N, H*D) -> (B, H, N, D)
        return t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)

    # ------------------------------------------------------------------------------- fused projections
    def projections(self):
        """The layers the fused matrix stacks: (to_q, to_k, to_v) for self-attention, (to_k, to_v) for cross."""
        return (self.to_k, self.to_v) if self.is_cross_attention else (self.to_q, self.to_k, self.to_v)

    def fuse_projections(self):
        """Stack the projections' weights (and biases) into one matrix. Refused for a projection that is not a
        plain nn.Linear (a LoRA-adapted one: its correction would be left out)."""
        layers = self.projections()
        for layer in layers:
            if type(layer) is not nn.Linear:
                raise ValueError(f"fuse_qkv_projections: a projection is a {type(layer).__name__}, not a plain "
                                 f"nn.Linear (a LoRA?); unload_lora_weights() first, then fuse")
        with torch.no_grad():
            self.fused_weight = torch.cat([layer.weight for layer in layers])
            self.fused_bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
        self.fused_from = fused_key(layers)

    def unfuse_projections(self):
        self.fused_weight, self.fused_bias, self.fused_from = None, None, None

    def fused_parameters(self, layers):
        """The fused (weight, bias): stacked afresh while gradients are wanted (so they reach each layer's own
        weight), else the kept copy, made again first if a layer's weights changed since (in place or replaced)."""
        if torch.is_grad_enabled() and any(p.requires_grad for layer in layers for p in layer.parameters()):
            bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
            return torch.cat([layer.weight for layer in layers]), bias
        if not torch.compiler.is_compiling() and fused_key(layers) != self.fused_from:
            self.fuse_projections()
        return self.fused_weight, self.fused_bias

    def project(self, x, context):
        """q, k, v (B, H, N, D) / (B, H, M, D): three projections, or one matmul when fused. A LoRA put on a
        projection after fusing makes this attention run its three projections again (the LoRA acts)."""
        layers = self.projections()
        if self.fused_weight is None or any(type(layer) is not nn.Linear for layer in layers):
            return self.split_heads(self.to_q(x)), self.split_heads(self.to_k(context)), \
                self.split_heads(self.to_v(context))
        weight, bias = self.fused_parameters(layers)
        if self.is_cross_attention:  # q from x; [k | v] = context [Wk; Wv]^T
            k, v = F.linear(context, weight, bias).chunk(2, dim=-1)
            return self.split_heads(self.to_q(x)), self.split_heads(k), self.split_heads(v)
        return tuple(self.split_heads(t) for t in F.linear(x, weight, bias).chunk(3, dim=-1))  # [q | k | v]

    def forward(self, x, context=None, mask=None):
        """``context`` may have fewer rows than ``x`` (one per video while ``x`` has one per frame):
        keys and values are then projected once per video and shared by its frames."""
        context = x if context is None else context
        q, k, v = self.project(x, context)
        if k.shape[0] != q.shape[0]:
            if q.shape[0] % k.shape[0]:
                raise ValueError(f"context batch {k.shape[0]} does not divide query batch {q.shape[0]}")
            k, v = (t.repeat_interleave(q.shape[0] // k.shape[0], dim=0) for t in (k, v))
        if self.keep_probs:  # the formula written out, keeping the map for drawing
            self.last_probs = attention_probs(q, k, mask=mask).detach()
            out = self.last_probs.to(v.dtype) @ v
        else:
            out = attention(q, k, v, backend=self.backend, slice_size=self.slice_size, mask=mask)
        out = out.transpose(1, 2).flatten(2)
        return self.to_out[1](self.to_out[0](out))


def fused_key(layers):
    """What a fused copy was made from: each layer, its weight and bias, and their in-place versions."""
    return tuple((id(layer), *((id(p), p._version) for p in layer.parameters())) for layer in layers)


def fuse_projections(model):
    """Fuse every attention of ``model`` (``Attention.fuse_projections``); all are checked before any is fused."""
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]
    for name, m in modules:
        for layer in m.projections():
            if type(layer) is not nn.Linear:
                raise ValueError(f"fuse_qkv_projections: {name} has a {type(layer).__name__} projection, not a plain "
                                 f"nn.Linear (a LoRA): unload_lora_weights() first, or fuse_lora() and save and "
                                 f"reload the pipeline, then fuse")
    for _, m in modules:
        m.fuse_projections()


def unfuse_projections(model):
    for m in model.modules():
        if isinstance(m, Attention):
            m.unfuse_projections()


class GEGLU(nn.Module):
    """Gated GELU: split a projection in two halves a, g and return a * gelu(g)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU -> Linear, with an optional chunked mode that runs a few tokens at a time.

    Chunking (``chunk_size``, along ``chunk_dim``) trades speed for a smaller peak: the 4x-wide
    hidden activation exists for one chunk at a time only. Names: ``net.0.proj``, ``net.2``.
    """

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])
        self.chunk_size, self.chunk_dim = None, 1

    def _ff(self, x):
        for layer in self.net:
            x = layer(x)
        return x

    def forward(self, x):
        if not self.chunk_size:
            return self._ff(x)
        return torch.cat([self._ff(c) for c in x.split(self.chunk_size, dim=self.chunk_dim)], dim=self.chunk_dim)
