"""UNet3DConditionModel: predicts the noise in a video latent, given the step t and the prompt.

    sample (B, 4, F, h, w), t, text (B, 77, 1024)  ->  noise estimate (B, 4, F, h, w)

Top to bottom (see ``forward``): embed t; fold frames into the batch; conv_in; transformer_in
(attention across frames once, before anything else); down levels (keeping skips); mid; up
levels (consuming skips); GroupNorm -> SiLU -> conv_out; unfold the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from ..attention import Attention, FeedForward, fuse_projections, unfuse_projections
from ..checkpoint import CheckpointError, ModelBase, check_positive_ints, check_small_positive
from ..frames import batch_to_frames, frames_to_batch
from ..techniques import freeu
from ..techniques.deepcache import DeepCache
from ..techniques.free_noise import FreeNoise, set_windows
from .blocks import DOWN_BLOCKS, UP_BLOCKS, UNetMidBlock3DCrossAttn
from .temporal import TemporalTransformer


def timestep_embedding(t, dim, max_period=10000):
    """(N,) timesteps -> (N, dim) features [cos(t w_0..w_{d/2-1}), sin(...)], w_i = max_period^(-2i/dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal features of t.

    With ``cond_dim`` (the config's ``time_cond_proj_dim``) a condition c, e.g. the guidance-scale embedding
    of a consistency-distilled model (``t2vlab.techniques.consistency``), is projected and added first:
        emb = linear_2(silu(linear_1(x + cond_proj(c))))      cond_proj: Linear(cond_dim -> in_dim), no bias
    """

    def __init__(self, in_dim, dim, cond_dim=None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.cond_proj = nn.Linear(cond_dim, in_dim, bias=False) if cond_dim is not None else None

    def forward(self, x, cond=None):
        """x (N, in_dim) sinusoidal features; cond (N, cond_dim) or (1, cond_dim), given iff cond_proj exists."""
        if self.cond_proj is not None:
            x = x + self.cond_proj(check_timestep_cond(cond, self.cond_proj.in_features, x))
        elif cond is not None:
            raise ValueError("timestep_cond was given, but this UNet has no guidance embedding "
                             "(its config's time_cond_proj_dim is None)")
        return self.linear_2(F.silu(self.linear_1(x)))


def check_timestep_cond(cond, dim, x):
    """The condition as (N, dim) or (1, dim) in x's dtype and device, or a ValueError naming timestep_cond."""
    if cond is None:
        raise ValueError(f"timestep_cond is required: this UNet embeds a guidance scale (time_cond_proj_dim={dim}); "
                         "pass timestep_cond=guidance_scale_embedding(w, embedding_dim="
                         f"{dim}) from t2vlab.techniques.consistency, shape (batch, {dim})")
    if not isinstance(cond, torch.Tensor) or cond.ndim != 2 or cond.shape[1] != dim \
            or cond.shape[0] not in (1, x.shape[0]):
        got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"timestep_cond must be a tensor of shape ({x.shape[0]}, {dim}) (or (1, {dim})), got {got}")
    return cond.to(device=x.device, dtype=x.dtype)


@dataclass
class UNetConfig:
    """The keys of the checkpoint's ``unet/config.json`` (defaults: the published 1.7B model)."""

    sample_size: int = 32
    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1024
    attention_head_dim: int = 64  # the width of one head; a level has channels // 64 heads
    num_attention_heads: int | None = None
    time_cond_proj_dim: int | None = None  # width of the guidance embedding added to t's (None: none)

    def validate(self):
        check_positive_ints(self, "sample_size", "in_channels", "out_channels", "block_out_channels",
                            "layers_per_block", "norm_num_groups", "cross_attention_dim", "attention_head_dim")
        check_small_positive(self, "norm_eps")
        if self.layers_per_block > 64 or len(self.block_out_channels) > 8:
            raise CheckpointError(f"UNet config: {self.layers_per_block} layers per block and "
                                  f"{len(self.block_out_channels)} levels is beyond any model of this family")
        if not (len(self.down_block_types) == len(self.up_block_types) == len(self.block_out_channels)):
            raise CheckpointError("UNet config: down_block_types, up_block_types and block_out_channels must have "
                                  f"the same length, got {len(self.down_block_types)}, {len(self.up_block_types)}, "
                                  f"{len(self.block_out_channels)}")
        for name, known in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
            for t in getattr(self, name):
                if t not in known:
                    raise CheckpointError(f"UNet config {name}: unknown block {t!r}; this architecture has "
                                          f"{sorted(known)}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % self.attention_head_dim:
                raise CheckpointError(f"UNet config: block_out_channels {c} must be divisible by norm_num_groups "
                                      f"({self.norm_num_groups}) and attention_head_dim ({self.attention_head_dim})")
        if self.act_fn != "silu":
            raise CheckpointError(f"UNet config act_fn={self.act_fn!r}: only 'silu' is used by this architecture")
        if self.num_attention_heads is not None:
            raise CheckpointError("UNet config: num_attention_heads is not used by this architecture (the heads "
                                  "follow from attention_head_dim)")
        if self.time_cond_proj_dim is not None:  # a guidance embedding (consistency-distilled models)
            check_positive_ints(self, "time_cond_proj_dim")


class UNet3DConditionModel(ModelBase):
    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb, cfg.time_cond_proj_dim)
        self.transformer_in = TemporalTransformer(ch[0], 8, cfg.attention_head_dim, cfg.norm_num_groups)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg.down_block_types):
            self.down_blocks.append(DOWN_BLOCKS[kind](ch[max(i - 1, 0)], ch[i], temb, cfg,
                                                      add_downsample=i < len(ch) - 1))
        self.mid_block = UNetMidBlock3DCrossAttn(ch[-1], temb, cfg)
        self.up_blocks = nn.ModuleList()
        rev = ch[::-1]
        for i, kind in enumerate(cfg.up_block_types):
            self.up_blocks.append(UP_BLOCKS[kind](rev[min(i + 1, len(ch) - 1)], rev[max(i - 1, 0)], rev[i], temb,
                                                  cfg, add_upsample=i < len(ch) - 1))
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)
        self.deepcache = None  # hook point: a DeepCache while enable_deepcache is on (t2vlab.techniques.deepcache)

    # ------------------------------------------------------------------------------------ forward
    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None, return_dict=None):
        """sample (B, C, F, H, W), timestep (scalar or (B,)), encoder_hidden_states (B, 77, D) -> (B, C, F, H, W).

        ``encoder_hidden_states`` may also be (B, F, 77, D): one text per frame (prompt travel).
        ``timestep_cond`` (B, time_cond_proj_dim): the guidance-scale embedding, for (and only for) a UNet
        whose config has ``time_cond_proj_dim``.
        ``return_dict`` is accepted for drop-in use and ignored: the result is always a tensor.
        """
        if self.deepcache is not None and self.deepcache.reuse(sample, timestep):  # DeepCache: shallow levels only
            return self.deepcache.shallow_forward(self, sample, timestep, encoder_hidden_states, timestep_cond)
        x, temb, context, f = self.inputs(sample, timestep, encoder_hidden_states, timestep_cond)

        skips = [x]
        for block in self.down_blocks:
            x, kept = self.run_level(block, x, temb, context, f)
            skips += kept
        x = self.run_level(self.mid_block, x, temb, context, f)
        x = self.up(x, skips, temb, context, f, self.up_blocks)
        return self.head(x, f)

    def inputs(self, sample, timestep, encoder_hidden_states, timestep_cond=None):
        """Embed t (and the guidance embedding ``timestep_cond``, if any), fold the frames, conv_in, transformer_in
        -> (x (B*F, C, H, W), temb (B*F, T), context, F)."""
        if sample.ndim != 5:
            raise ValueError(f"sample must be (batch, channels, frames, height, width), got {tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        if encoder_hidden_states.shape[0] != b:
            raise ValueError(f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]}, sample has {b}")
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        t_features = timestep_embedding(t, self.config.block_out_channels[0]).to(self.dtype)
        temb = self.time_embedding(t_features, timestep_cond)  # (B, T)
        temb = temb.repeat_interleave(f, dim=0)  # one row per frame
        if encoder_hidden_states.ndim == 4:  # one text per frame: (B, F, L, D) -> (B*F, L, D), frame fastest
            if encoder_hidden_states.shape[1] != f:
                raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[1]} frames, sample has {f}")
            context = encoder_hidden_states.flatten(0, 1)
        else:  # one row per video: cross-attention shares its keys over the video's frames
            context = encoder_hidden_states

        x = frames_to_batch(sample)  # (B*F, C, H, W)
        x = self.conv_in(x)
        x = self.transformer_in(x, f)
        return x, temb, context, f

    def up(self, x, skips, temb, context, f, blocks):
        """The up levels ``blocks``, each consuming its skips from the end of ``skips`` (last kept, first used)."""
        for block in blocks:
            n = len(block.resnets)
            level_skips, skips = skips[-n:], skips[:-n]
            # when H or W is not a multiple of 2^levels, upsample to the next skip's size, not 2x
            size = None
            if block.upsamplers is not None and tuple(skips[-1].shape[-2:]) != (2 * x.shape[-2], 2 * x.shape[-1]):
                size = skips[-1].shape[-2:]
            x = self.run_level(block, x, level_skips, temb, context, f, upsample_size=size)
        return x

    def head(self, x, f):
        """GroupNorm -> SiLU -> conv_out, then unfold the frames: (B*F, C, H, W) -> (B, out, F, H, W)."""
        x = self.conv_norm_out(x)  # rebinding x frees each activation as the next one exists
        x = F.silu(x)
        x = self.conv_out(x)
        return batch_to_frames(x, f)

    # ------------------------------------------------------------------------ gradient checkpointing
    gradient_checkpointing = False

    def enable_gradient_checkpointing(self):
        """While gradients are recorded, keep only each level's inputs and recompute its activations in the
        backward pass: training memory falls to about one level's activations, for about one more forward."""
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self):
        self.gradient_checkpointing = False

    def run_level(self, block, *args, **kwargs):
        """One level (down, mid or up block), checkpointed when that is on and gradients are recorded
        (dropout draws the same numbers again: the random state is saved and restored)."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return recompute_in_backward(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    # -------------------------------------------------------- techniques (each in t2vlab.techniques)
    def enable_freeu(self, s1, s2, b1, b2):
        """FreeU (``t2vlab.techniques.freeu``) at the two lowest-resolution up levels; for ms-1.7b diffusers
        documents ``s1=0.9, s2=0.2, b1=1.2, b2=1.4``. Each factor a finite number >= 0."""
        freeu.set_freeu(self, freeu.freeu_scales(s1, s2, b1, b2))

    def disable_freeu(self):
        freeu.set_freeu(self, None)

    @property
    def freeu_enabled(self) -> bool:
        return any(block.freeu is not None for block in self.up_blocks)

    def enable_deepcache(self, cache_interval=3, cache_branch=0):
        """DeepCache (``t2vlab.techniques.deepcache``): the whole network every ``cache_interval`` calls, in
        between only the outer levels 0..``cache_branch`` on the deep features kept from the last full call."""
        self.disable_deepcache()
        self.deepcache = DeepCache(self, cache_interval, cache_branch)

    def disable_deepcache(self):
        if self.deepcache is not None:
            self.deepcache.remove()
        self.deepcache = None

    def enable_free_noise(self, context_length=16, context_stride=4, weighting_scheme="pyramid"):
        """FreeNoise's window-fused temporal attention (``t2vlab.techniques.free_noise``) in every temporal
        transformer, ``transformer_in`` included; at most ``context_length`` frames it is the plain layer."""
        set_windows(self, FreeNoise(context_length, context_stride, weighting_scheme))

    def disable_free_noise(self):
        set_windows(self, None)

    # ------------------------------------------------------------------------- memory/speed knobs
    def attention_modules(self):
        return [m for m in self.modules() if isinstance(m, Attention)]

    def set_attention_backend(self, backend="sdpa", slice_size=None):
        """"sdpa" (fused, default), "math" (the formula), or "sliced" (``slice_size`` heads at a time)."""
        for m in self.attention_modules():
            m.set_backend(backend, slice_size)

    def enable_attention_slicing(self, slice_size="auto"):
        """Compute attention a few (batch x head) slices at a time: "auto" = half the heads, "max" = one."""
        if slice_size == "max":
            slice_size = 1
        for m in self.attention_modules():
            size = max(m.heads // 2, 1) if slice_size == "auto" else slice_size
            m.set_backend("sliced", size)

    def disable_attention_slicing(self):
        self.set_attention_backend("sdpa")

    def fuse_qkv_projections(self):
        """Self-attention's q, k, v in one matmul, cross-attention's k, v in one (``attention.fuse_projections``),
        as diffusers' ``fuse_qkv_projections``; LoRA-adapted projections are refused."""
        fuse_projections(self)

    def unfuse_qkv_projections(self):
        """The three projections again; their weights were never changed, so this is exact."""
        unfuse_projections(self)

    def enable_forward_chunking(self, chunk_size=None, dim=0):
        """Run every feed-forward ``chunk_size`` rows at a time along ``dim`` (0: batch, 1: tokens)."""
        if dim not in (0, 1):
            raise ValueError(f"dim must be 0 (batch) or 1 (tokens), got {dim!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self._set_chunking(chunk_size or 1, dim)

    def disable_forward_chunking(self):
        self._set_chunking(None, 0)

    def _set_chunking(self, chunk_size, dim):
        for m in self.modules():
            if isinstance(m, FeedForward):
                m.chunk_size, m.chunk_dim = chunk_size, dim
