"""The text encoder: token ids -> the context the UNet attends to, the second half of the text side.

    [49406, 320, 1125, ...] (B, 77) --CLIPTextEncoder--> last hidden state (B, 77, 1024)

(``t2vlab.tokenizer`` makes the ids.) The encoder is the text half of OpenCLIP ViT-H/14: token + position
embeddings, 23 pre-norm transformer blocks (causal self-attention: token i sees tokens 0..i only; then an
MLP), a final LayerNorm. Parameter names are those of the published ``text_encoder/`` files, which are
CLIP's: its attention layer is its own module here (``CLIPAttention``: ``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``, with bias; the UNet's ``attention.Attention`` names them ``to_q`` ... ``to_out.0``), and it
computes with the same function, ``attention.attention``, so the backends (sdpa / math / sliced) are shared.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BACKENDS, attention
from .checkpoint import TRANSFORMERS_WEIGHTS, CheckpointError, ModelBase, check_positive_ints, check_small_positive
from .checks import integer, one_of

ACTIVATIONS = {
    "gelu": F.gelu,                                        # exact: x * Phi(x)
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's sigmoid approximation
}


@dataclasses.dataclass
class CLIPTextConfig:
    """Field names as in transformers' ``text_encoder/config.json``; defaults: ms-1.7b's encoder."""

    vocab_size: int = 49408              # rows of the token embedding (the tokenizer's vocabulary)
    hidden_size: int = 1024              # C, the width of every token's vector (and of the context)
    intermediate_size: int = 4096        # the MLP's hidden width (4C)
    num_hidden_layers: int = 23          # transformer blocks (OpenCLIP ViT-H/14's 24 without the last)
    num_attention_heads: int = 16        # heads of C / 16 = 64 dimensions each
    max_position_embeddings: int = 77    # positions: the longest prompt in tokens, start and end included
    hidden_act: str = "gelu"             # the MLP's activation, a key of ACTIVATIONS
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 0        # kept only so save_pretrained writes back what it read
    eos_token_id: int = 2
    pad_token_id: int = 1
    use_attention_mask: bool = False  # diffusers' pipelines pass the padding mask only when this is set

    def validate(self):
        check_positive_ints(self, "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings")
        check_positive_ints(self, "num_hidden_layers", limit=256)
        check_positive_ints(self, "vocab_size", limit=1 << 20)
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(f"config hidden_size={self.hidden_size} is not divisible by "
                                  f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise CheckpointError(f"config hidden_act={self.hidden_act!r}: "
                                  f"expected one of {sorted(ACTIVATIONS)}")
        check_small_positive(self, "layer_norm_eps")


class TextEmbeddings(nn.Module):
    """Token embedding + learnt position embedding: ids (B, T) -> (B, T, C)."""

    def __init__(self, config):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids):
        return self.token_embedding(input_ids) + self.position_embedding.weight[:input_ids.shape[1]]


class CLIPAttention(nn.Module):
    """Multi-head self-attention with CLIP's names (q_proj, k_proj, v_proj, out_proj, with bias)."""

    def __init__(self, config):
        super().__init__()
        c = config.hidden_size
        self.heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)
        self.backend, self.slice_size = "sdpa", None

    def forward(self, x, mask=None):
        q, k, v = self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), \
            self.split_heads(self.v_proj(x))
        out = attention(q, k, v, backend=self.backend, slice_size=self.slice_size, causal=True, mask=mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def split_heads(self, t):  # (B, T, C) -> (B, H, T, C/H)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class CLIPMLP(nn.Module):
    """fc1 (C -> 4C), GELU or quick-GELU, fc2 (4C -> C)."""

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPLayers(nn.Module):
    """The stack of blocks (``encoder.layers.N`` in the files); runs the first ``n`` of them."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask=None, n=None):
        for layer in self.layers[:n]:
            x = layer(x, mask)
        return x


class TextTransformer(nn.Module):
    """Embeddings -> blocks -> final LayerNorm (``text_model.*`` in the files)."""

    def __init__(self, config):
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.encoder = CLIPLayers(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, mask=None, n_layers=None):
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids), mask, n_layers))


class CLIPTextEncoder(ModelBase):
    """CLIP's text transformer: ids (B, T) -> last hidden state after the final norm (B, T, C).

    ``clip_skip=k`` stops k blocks early and applies the final norm to that output, as the
    reference pipeline does (``hidden_states[-(k + 1)]`` then ``final_layer_norm``).
    ``attention_mask`` (B, T; 1 keep, 0 padding) hides padding keys, on top of the causal mask.
    """

    config_class = CLIPTextConfig
    weight_stems = TRANSFORMERS_WEIGHTS
    ignore_unexpected = ("embeddings.position_ids",)  # an index buffer older files carry
    prefix = "text_model."

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.text_model = TextTransformer(config)

    def forward(self, input_ids, attention_mask=None, clip_skip=None):
        if input_ids.ndim != 2 or input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input_ids: expected shape (batch, tokens <= "
                             f"{self.config.max_position_embeddings}), got {tuple(input_ids.shape)}")
        n_layers = self.config.num_hidden_layers
        if clip_skip is not None:
            integer("clip_skip", clip_skip, low=0, high=n_layers, hint=" (blocks to skip at the end)")
        mask = None
        if attention_mask is not None:  # (B, T) -> additive (B, 1, 1, T): padding keys get a huge negative
            dtype = self.text_model.final_layer_norm.weight.dtype
            keep = attention_mask.to(device=input_ids.device, dtype=torch.bool)[:, None, None, :]
            mask = torch.zeros(keep.shape, dtype=dtype, device=input_ids.device).masked_fill(
                ~keep, torch.finfo(dtype).min)
        return self.text_model(input_ids, mask, n_layers - (clip_skip or 0))

    def set_attention_backend(self, backend="sdpa", slice_size=None):
        one_of("backend", backend, BACKENDS)
        for m in self.modules():
            if isinstance(m, CLIPAttention):
                m.backend, m.slice_size = backend, slice_size

    @classmethod
    def convert_state_dict(cls, state):
        """transformers 5 writes the tensors without the ``text_model.`` prefix published files carry."""
        if state and not any(k.startswith(cls.prefix) for k in state):
            return {cls.prefix + k: v for k, v in state.items()}
        return state

    def config_dict(self) -> dict:
        """config.json as transformers' ``CLIPTextModel.from_pretrained`` reads it."""
        return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **dataclasses.asdict(self.config)}
