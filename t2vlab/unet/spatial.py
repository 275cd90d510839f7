"""The spatial layers of a UNet level: attention within each frame, and from each pixel to the text.

Shapes: frames folded into the batch, (B*F, C, H, W); each frame is one sequence of H*W tokens.

- TransformerBlock     x + SelfAttn(LN x); x + CrossAttn(LN x, text); x + FeedForward(LN x)
- SpatialTransformer   GroupNorm -> Linear -> TransformerBlock over the H*W tokens of each frame
                       -> Linear, residual. Cross-attention reads the text.

``TransformerBlock`` is shared with the temporal transformer (``t2vlab.unet.temporal``), which runs
it with tokens along time and no text.
"""

from __future__ import annotations

from torch import nn

from ..attention import Attention, FeedForward


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, then attention to ``context`` (or self again), then GEGLU."""

    def __init__(self, dim, heads, dim_head, cross_attention_dim=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def attend(self, x, context=None):
        """The two attention sublayers (with their residuals): what FreeNoise runs within windows."""
        x = x + self.attn1(self.norm1(x))
        return x + self.attn2(self.norm2(x), context)

    def feed_forward(self, x):
        return x + self.ff(self.norm3(x))

    def forward(self, x, context=None):
        return self.feed_forward(self.attend(x, context))


class SpatialTransformer(nn.Module):
    """Attention among the H*W positions of each frame, and from each position to the prompt."""

    def __init__(self, channels, heads, dim_head, cross_attention_dim, groups=32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head, cross_attention_dim)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, context):
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (B*F, H*W, inner)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens).transpose(1, 2).reshape(n, c, h, w)
