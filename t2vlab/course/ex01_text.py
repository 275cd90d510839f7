"""Notebook 01's exercises: framing a prompt's tokens for the text encoder, and causal attention."""

from __future__ import annotations

import math
import warnings

import torch

from ..attention import attention_math
from ..tokenizer import Tokenizer
from .core import Exercise, call, compare, generator, register

PROMPTS = ["a photo of a cat", "", "an astronaut riding a horse on mars, 4k",
           ", ".join(["a red fox running through fresh snow in a quiet pine forest"] * 8)]  # the last: > 75 tokens


# -------------------------------------------------------------------------- 01.frame: 77 ids per prompt
def frame(pieces, start, end, pad, length=77):
    """The ids the text encoder reads: [start] + pieces (cut to length - 2) + [end] + [pad] * the rest.

    pieces: a list of ints (the prompt's BPE token ids, no special tokens) -> LongTensor (length,)."""
    text = list(pieces)[:length - 2]  # room for the start and end tokens
    ids = [start, *text, end]
    return torch.tensor(ids + [pad] * (length - len(ids)), dtype=torch.long)


def _tokenizer():
    if not hasattr(_tokenizer, "tok"):  # built once: CLIP's vocabulary takes a second
        _tokenizer.tok = Tokenizer.default()
    return _tokenizer.tok


def check_frame(fn):
    tok = _tokenizer()
    special = tok.special_tokens  # role -> (token, id): start 49406, end 49407, pad "!" = 0
    start, end, pad = special["start"][1], special["end"][1], special["pad"][1]
    for prompt in PROMPTS:
        pieces = tok.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]  # the BPE ids, uncut
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long prompt's truncation warning: the cut is what is checked
            want = tok(prompt).input_ids[0]  # the package's (B, 77) ids, as the pipeline computes them
        got = call(fn, list(pieces), start, end, pad, tok.max_length)
        if torch.is_tensor(got):
            got = got.long()
        text = pieces[:tok.max_length - 2]
        fill = lambda ids, p=pad: torch.tensor(ids + [p] * (tok.max_length - len(ids)))  # noqa: E731
        # integer ids: compare's float tolerances (1e-4) are far below 1, so "close" means "equal"
        compare(got, want, f"frame(...) for {prompt[:30]!r}{'...' if len(prompt) > 30 else ''}", mistakes={
            "without the end token after the text": fill([start, *text]),
            "without the start token": fill([*text, end]),
            "padding with the end token's id instead of the pad id (this tokenizer pads with '!' = 0)":
                fill([start, *text, end], end),
            "cutting the text at `length` tokens, which pushes the end token out (keep length - 2)":
                fill([start, *pieces, end])[:tok.max_length],
            "with the padding before the text": torch.tensor([pad] * (tok.max_length - len(text) - 2)
                                                             + [start, *text, end]),
        })


register(Exercise("01.frame", "frame a prompt's tokens: start, text, end, padding to 77", "frame", check_frame, frame,
                  hint="[start] + the first length-2 pieces + [end], then pad with `pad` up to `length`"))


# ---------------------------------------------------------------- 01.causal_attention: no peeking ahead
def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(d) + mask) v where query i sees keys 0..i only: q, k, v (B, H, T, d) -> (B, H, T, d)."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5                     # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)      # key j > query i
    scores = scores.masked_fill(future, float("-inf"))                        # e^-inf = 0 after the softmax
    return scores.softmax(dim=-1) @ v


def check_causal_attention(fn):
    g = generator(1)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g) for _ in range(3))  # 6 positions, as a short prompt
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    keep = torch.ones(6, 6, dtype=torch.bool).tril()
    # float32 rounding of the same formula in another order: compare's default rtol 1e-4, atol 1e-5
    compare(call(fn, q, k, v), attention_math(q, k, v, causal=True), "causal_attention(q, k, v)", mistakes={
        "without the causal mask: every position reads the whole prompt, the later words included":
            scores.softmax(-1) @ v,
        "with the mask the wrong way round (triu: each position sees itself and the future, not the past)":
            scores.masked_fill(~keep.T, float("-inf")).softmax(-1) @ v,
        "masking after the softmax (the weights of the past then no longer sum to 1)":
            (scores.softmax(-1) * keep) @ v,
        "without the 1/sqrt(d) scale": (q @ k.transpose(-2, -1)).masked_fill(~keep, float("-inf")).softmax(-1) @ v,
    })


register(Exercise("01.causal_attention", "causal self-attention", "causal_attention", check_causal_attention,
                  causal_attention,
                  hint="scores above the diagonal (key j > query i) get -inf before the softmax over the keys"))
