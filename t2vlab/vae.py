"""The KL autoencoder (VAE) of Stable Diffusion, which ModelScope uses to turn latents into frames.

    image (B, 3, H, W) --Encoder--> moments (B, 2*4, H/8, W/8) --quant_conv--> mean, logvar
    latent (B, 4, H/8, W/8) --post_quant_conv--> --Decoder--> image (B, 3, H, W), roughly in [-1, 1]

The encoder is a stack of ResnetBlock2D levels, each but the last ending in a stride-2 convolution;
a mid block (resnet, single-head self-attention over all pixels, resnet) sits at the bottom; the
decoder mirrors it with nearest-neighbour upsampling. The encoder predicts a diagonal Gaussian
q(z|x) = N(mean, exp(logvar)), not a point. The diffusion model works on latents multiplied by
``scaling_factor`` (0.18215) so that they have roughly unit variance.

A video is decoded frame by frame (frames folded into the batch). Two ways to bound memory:

- slicing: decode (and encode, ``encode_video``) ``frames_per_slice`` frames at a time, so peak memory
  stops growing with frames;
- tiling: decode overlapping spatial tiles of a frame and blend them with linear ramps in the
  overlap, for frames larger than a tile. Because the decoder's GroupNorm statistics and the mid
  block's attention see one tile, not the whole frame, tiled output differs (slightly) from untiled.

float16: the SD VAE's activations can exceed float16's range (65504). A float16 decode whose output
is not finite is redone with float32 weights, one frame at a time, and says so once. Setting
``vae.force_upcast = True`` always decodes that way. The published config's ``force_upcast: true``
is recorded in ``vae.config`` but not applied by default: this VAE decodes these videos finitely in
float16, and the float32 path costs time on every video (the reference's text-to-video pipeline
decodes in float16 too).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .attention import Attention, fuse_projections, unfuse_projections
from .checkpoint import CheckpointError, ModelBase, check_positive_ints
from .checks import boolean, integer, number, positive_int
from .frames import batch_to_frames, frames_to_batch
from .noise import draw_noise
from .resnet import Downsample2D, ResnetBlock2D, Upsample2D

EPS = 1e-6  # GroupNorm epsilon everywhere in the VAE


@dataclasses.dataclass
class VAEConfig:
    """The keys of the published ``vae/config.json`` (defaults: the reference library's)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple = ("DownEncoderBlock2D",)
    up_block_types: tuple = ("UpDecoderBlock2D",)
    block_out_channels: tuple = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None  # used by later models (SD3, Flux); must be null here
    latents_mean: tuple | None = None
    latents_std: tuple | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def validate(self):
        check_positive_ints(self, "in_channels", "out_channels", "block_out_channels", "layers_per_block",
                            "latent_channels", "norm_num_groups", "sample_size")
        check_positive_ints(self, "layers_per_block", limit=64)
        levels = len(self.block_out_channels)
        if levels > 8:
            raise CheckpointError(f"config block_out_channels has {levels} levels; models of this family have 4")
        kinds = (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D"))
        for name, kind in kinds:
            types = getattr(self, name)
            bad = [t for t in types if t != kind]
            if bad:
                raise CheckpointError(f"config {name}: unsupported block type(s) {bad}; only {kind!r} exists")
            if len(types) != levels:
                raise CheckpointError(f"config {name} has {len(types)} entries but block_out_channels "
                                      f"has {levels}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise CheckpointError(f"config norm_num_groups={self.norm_num_groups} does not divide "
                                  f"block_out_channels {bad}")
        if self.act_fn != "silu":
            raise CheckpointError(f"config act_fn={self.act_fn!r}: only 'silu' is supported")
        number("config scaling_factor", self.scaling_factor, low=0, low_open=True, error=CheckpointError)
        for name in ("shift_factor", "latents_mean", "latents_std"):
            if getattr(self, name) is not None:
                raise CheckpointError(f"config {name}={getattr(self, name)!r}: not supported (only null); "
                                      "this checkpoint is not an SD-1.x-style VAE")
        for name in ("force_upcast", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
            boolean(f"config {name}", getattr(self, name), error=CheckpointError, hint=" (true or false in JSON)")


# ------------------------------------------------------------------------------------------ blocks
class SpatialSelfAttention(Attention):
    """One-head self-attention over the H*W pixels of a feature map, with GroupNorm and a residual.

    x (B, C, H, W) -> x + Attention(GroupNorm(x) as H*W tokens of size C)
    """

    def __init__(self, channels, groups):
        super().__init__(channels, heads=1, dim_head=channels, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        out = super().forward(tokens)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """resnet -> self-attention -> resnet, at the lowest resolution."""

    def __init__(self, channels, groups, add_attention=True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, groups=groups, eps=EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)] if add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                                                    groups=groups, eps=EPS) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)] if downsample else [])

    def forward(self, x):
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                                                    groups=groups, eps=EPS) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)] if upsample else [])

    def forward(self, x):
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x)
        return x


class Encoder(nn.Module):
    """image (B, in, H, W) -> moments (B, 2*latent, H/f, W/f): mean and log-variance stacked."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, n = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, groups, downsample=i < n - 1)
            for i in range(n)])
        self.mid_block = MidBlock(ch[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        x = self.conv_norm_out(x)  # rebinding x frees each activation as the next one exists
        x = F.silu(x)
        return self.conv_out(x)


class Decoder(nn.Module):
    """latent (B, latent, h, w) -> image (B, out, h*f, w*f). Each up level has one resnet more."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, n = cfg.block_out_channels[::-1], cfg.norm_num_groups, len(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock2D(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, groups, upsample=i < n - 1)
            for i in range(n)])
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        x = self.conv_norm_out(x)  # rebinding x frees each full-resolution activation as the next one exists
        x = F.silu(x)
        return self.conv_out(x)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), from moments (B, 2C, h, w) split along channels."""

    def __init__(self, moments):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator=None):
        """mean + std * eps, eps ~ N(0, I) (drawn with ``generator`` on its own device)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self):
        return self.mean

    def kl(self):
        """KL(q || N(0, I)) per sample: 0.5 * sum(mean^2 + var - 1 - logvar) over (C, h, w)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


# ------------------------------------------------------------------------------------ the model
class AutoencoderKL(ModelBase):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        L = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(L, L, 1) if config.use_post_quant_conv else None
        self.force_upcast = False  # opt-in; non-finite float16 output is upcast regardless (see module doc)
        self.use_slicing, self.frames_per_slice = False, 1
        self.use_tiling, self.tile_size, self.tile_overlap = False, config.sample_size, 0
        self._said_upcast = False

    @property
    def spatial_factor(self):
        return 2 ** (len(self.config.block_out_channels) - 1)

    # ------------------------------------------------------------------------------ switches
    def enable_slicing(self, frames_per_slice=1):
        """Decode (and encode) ``frames_per_slice`` images at a time."""
        self.use_slicing, self.frames_per_slice = True, positive_int("frames_per_slice", frames_per_slice)

    def disable_slicing(self):
        self.use_slicing = False

    def enable_tiling(self, tile_size=None, overlap=None):
        """Decode frames larger than ``tile_size`` pixels (default: config.sample_size) in tiles that
        overlap by ``overlap`` pixels (default: a quarter tile). Both are multiples of spatial_factor."""
        f = self.spatial_factor
        tile = integer("tile_size", self.config.sample_size if tile_size is None else tile_size, low=f,
                       multiple_of=f, hint=" (pixels)")
        overlap = integer("overlap", tile // 4 if overlap is None else overlap, low=0, high=tile - f, multiple_of=f,
                          hint=f" (pixels, less than tile_size={tile})")
        self.use_tiling, self.tile_size, self.tile_overlap = True, tile, overlap

    def disable_tiling(self):
        self.use_tiling = False

    def fuse_qkv_projections(self):
        """The attentions' q, k, v in one matmul each (``t2vlab.attention.fuse_projections``), as diffusers'."""
        fuse_projections(self)

    def unfuse_qkv_projections(self):
        unfuse_projections(self)

    # ------------------------------------------------------------------------------ encode
    def encode(self, images) -> DiagonalGaussian:
        """images (B, in_channels, H, W) in [-1, 1] -> the posterior over latents (B, latent, H/f, W/f)."""
        check_shape("images", images, 4, self.config.in_channels, "(B, C, H, W)")
        return DiagonalGaussian(self._by_slice(images.to(self.dtype), self._encode_plain))

    def encode_video(self, frames, generator=None, sample=True):
        """frames (B, F, H, W, 3) in [0, 1] -> latents (B, latent, F, H/f, W/f) times scaling_factor: the
        latents the denoising loop works on (the inverse of ``decode_video``).

        Frames are folded into the batch (frame index fastest) and each slice (``enable_slicing``) is
        moved to the model's device, mapped to [-1, 1] and encoded as it comes, so peak memory does not
        grow with the number of frames. ``sample``: z ~ q(z|x) = mean + std * eps, with eps drawn in one
        piece for all B*F frames (``draw_noise``: the reference's numbers for the same generator, sliced
        or not); otherwise the mean (no draw).
        """
        if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[-1] != self.config.in_channels:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"frames: expected a tensor (B, F, H, W, {self.config.in_channels}), got {shape}")
        b, f = frames.shape[:2]

        def encode(chunk):  # (n, H, W, 3) in [0, 1], anywhere -> moments (n, 2 * latent, h, w) on the model's device
            x = chunk.to(self.device).permute(0, 3, 1, 2).float().mul(2).sub(1).to(self.dtype).contiguous()
            return self._encode_plain(x)

        posterior = DiagonalGaussian(self._by_slice(frames.flatten(0, 1), encode))  # frames folded: (B*F, ...)
        z = posterior.mean
        if sample:
            eps = draw_noise((b, f, *z.shape[1:]), generator, z.device, z.dtype).flatten(0, 1)
            z = z + posterior.std * eps
        return batch_to_frames(z * self.config.scaling_factor, f)

    # ------------------------------------------------------------------------------ decode
    def decode(self, latents):
        """latents (B, latent, h, w), already divided by scaling_factor -> images (B, out, h*f, w*f).

        Unclamped, in the model's dtype; honours slicing, tiling and upcasting.
        """
        check_shape("latents", latents, 4, self.config.latent_channels, "(B, C, h, w)")
        return self._by_slice(latents.to(self.dtype), self._decode_slice)

    def decode_video(self, latents):
        """latents (B, latent, F, h, w) as the denoising loop leaves them -> frames (B, F, H, W, 3).

        Divides by scaling_factor, folds frames into the batch (frame index fastest), decodes, maps
        [-1, 1] to [0, 1] (float32, clamped). Each slice is finished as it comes: no full-size copies.
        """
        check_shape("latents", latents, 5, self.config.latent_channels, "(B, C, F, h, w)")
        b, c, f, h, w = latents.shape
        z = frames_to_batch(latents / self.config.scaling_factor)  # (B*F, C, h, w)

        def decode(chunk):  # (n, C, h, w) -> frames (n, H, W, 3) in [0, 1], float32
            return (self._decode_slice(chunk).float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)

        frames = self._by_slice(z.to(self.dtype), decode)
        return frames.reshape(b, f, *frames.shape[1:])

    def forward(self, images, sample_posterior=False, generator=None):
        """Reconstruct: encode, take a sample (or the mean), decode."""
        posterior = self.encode(images)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)

    def _by_slice(self, x, fn):
        """``fn`` applied to ``x`` (batch first) ``frames_per_slice`` images at a time when slicing, else to the
        whole batch at once; each result is written into one output as it comes, so that peak memory is one
        slice's work plus the output. The one slicing loop of encode, encode_video, decode and decode_video."""
        step = self.frames_per_slice if self.use_slicing else max(len(x), 1)
        out = None
        for i in range(0, max(len(x), 1), step):  # an empty batch still goes through fn once, for the shape
            y = fn(x[i:i + step])
            if out is None:
                out = y.new_empty((len(x), *y.shape[1:]))
            out[i:i + len(y)] = y
        return out

    def _encode_plain(self, x):
        """encoder + quant_conv: images (n, C, H, W) -> moments (n, 2 * latent, h, w)."""
        m = self.encoder(x)
        return m if self.quant_conv is None else self.quant_conv(m)

    def _decode_slice(self, z):
        """One slice of latents -> images: in tiles when tiling is on and the latents are larger than a tile."""
        tiled = self.use_tiling and max(z.shape[-2:]) > self.tile_size // self.spatial_factor
        return self._decode_tiled(z) if tiled else self._decode_safe(z)

    def _decode_tiled(self, z):
        """Decode overlapping tiles and average them, weighted by ramps that fall to ~0 at tile edges.

        out = sum_i ramp_i * tile_i / sum_i ramp_i. Where one tile alone covers a pixel, that is
        the tile's value; in an overlap the weight slides linearly from one tile to the next.
        """
        f = self.spatial_factor
        t, o = self.tile_size // f, self.tile_overlap // f
        n, _, h, w = z.shape
        out = weight = None
        for y in tile_starts(h, t, t - o):
            for x in tile_starts(w, t, t - o):
                tile = self._decode_safe(z[:, :, y:y + t, x:x + t])
                th, tw = tile.shape[-2:]
                ramp = ramp_1d(th, o * f, tile)[:, None] * ramp_1d(tw, o * f, tile)[None, :]
                if out is None:
                    out = tile.new_zeros((n, tile.shape[1], h * f, w * f))
                    weight = tile.new_zeros((h * f, w * f))
                out[:, :, y * f:y * f + th, x * f:x * f + tw] += tile * ramp
                weight[y * f:y * f + th, x * f:x * f + tw] += ramp
        return out / weight

    def _decode_safe(self, z):
        """post_quant_conv + decoder, in float32 when float16 is forced off or overflowed."""
        if z.dtype == torch.float16 and self.force_upcast:
            self._say_upcast("force_upcast is set (vae.force_upcast = False tries float16 first)")
            return self._decode_float32(z).to(z.dtype)
        x = self._decode_plain(z)
        if z.dtype == torch.float16 and not torch.isfinite(x).all():
            self._say_upcast("the float16 decode overflowed (non-finite output)")
            x = self._decode_float32(z).to(z.dtype)
        return x

    def _decode_plain(self, z):
        z = z if self.post_quant_conv is None else self.post_quant_conv(z)
        return self.decoder(z)

    def _decode_float32(self, z):
        """The decoder with float32 copies of its weights (the model stays as it is), frame by frame."""
        weights = {k: v.float() for k, v in self.decoder.state_dict().items()}
        pq = self.post_quant_conv
        out = []
        for zi in z.float().split(1):
            if pq is not None:
                zi = F.conv2d(zi, pq.weight.float(), pq.bias.float())
            out.append(functional_call(self.decoder, weights, (zi,)))
        return torch.cat(out)

    def _say_upcast(self, why):
        if not self._said_upcast:
            warnings.warn(f"AutoencoderKL: decoding in float32, one frame at a time, because {why}. "
                          "Said once per model.", stacklevel=4)
            self._said_upcast = True


# ------------------------------------------------------------------------------------- helpers
def check_shape(name, x, ndim, channels, layout):
    if not isinstance(x, torch.Tensor) or x.ndim != ndim or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor {layout} with C={channels}, got {shape}")


def tile_starts(size, tile, stride):
    """Start offsets of tiles of length ``tile`` covering ``size``; the last one ends exactly at the end."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, stride)) + [size - tile]


def ramp_1d(length, blend, like):
    """Weights (length,): rising linearly over the first ``blend`` samples, falling over the last."""
    i = torch.arange(length, device=like.device, dtype=torch.float32) + 0.5
    if blend == 0:
        return torch.ones(length, device=like.device, dtype=like.dtype)
    return torch.minimum(i / blend, (length - i) / blend).clamp(max=1.0).to(like.dtype)
