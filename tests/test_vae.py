"""AutoencoderKL: configs, input checks, slicing, tiling, float16 upcasting. Parity with diffusers'
AutoencoderKL (layout, encode/decode, posterior, video decode) is in tests/parity/test_vae_parity.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2vlab import AutoencoderKL
from t2vlab.checkpoint import CheckpointError

from .helpers import VAE_TINY as TINY
from .helpers import randomize_


@pytest.fixture(scope="module")
def tiny_vae():
    """TINY with random weights (the same arithmetic on diffusers' weights is in tests/parity/)."""
    return randomize_(AutoencoderKL.from_config(TINY), seed=0).eval()


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad, match", [
    (dict(block_out_channels=[16, -32]), "block_out_channels"),
    (dict(layers_per_block=10**9), "layers_per_block"),
    (dict(down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]), "unsupported block type"),
    (dict(up_block_types=["UpDecoderBlock2D"]), "has 1 entries"),
    (dict(norm_num_groups=5), "does not divide"),
    (dict(shift_factor=0.1159), "shift_factor"),
    (dict(act_fn="gelu"), "act_fn"),
    (dict(scaling_factor=float("nan")), "scaling_factor"),
])
def test_config_refuses_absurd_or_unsupported_values(bad, match):
    with pytest.raises(CheckpointError, match=match):
        AutoencoderKL.from_config({**TINY, **bad})


def test_null_extras_are_accepted():
    vae = AutoencoderKL.from_config({**TINY, "shift_factor": None, "latents_mean": None, "latents_std": None,
                                     "_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1"})
    assert vae.config.shift_factor is None


# ---------------------------------------------------------------------------------------- inputs
def test_bad_shapes_name_the_argument(tiny_vae):
    vae = tiny_vae
    with pytest.raises(ValueError, match=r"latents.*\(2, 4, 8\)"):
        vae.decode(torch.zeros(2, 4, 8))
    with pytest.raises(ValueError, match=r"latents.*\(1, 3, 8, 8\)"):
        vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"images.*\(1, 4, 8, 8\)"):
        vae.encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"latents.*\(1, 4, 8, 8\)"):
        vae.decode_video(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="frames_per_slice"):
        vae.enable_slicing(0)
    with pytest.raises(ValueError, match="overlap"):
        vae.enable_tiling(32, 32)


# --------------------------------------------------------------------------------------- slicing
# each way in: the network it runs slice by slice, its input for n images, and what to compare
SLICED = {
    "decode_video": ("decoder", lambda n, g: torch.randn(1, 4, n, 4, 4, generator=g), AutoencoderKL.decode_video),
    "decode": ("decoder", lambda n, g: torch.randn(n, 4, 4, 4, generator=g), AutoencoderKL.decode),
    "encode_video": ("encoder", lambda n, g: torch.rand(1, n, 8, 8, 3, generator=g),
                     lambda vae, x: vae.encode_video(x, sample=False)),
    "encode": ("encoder", lambda n, g: torch.rand(n, 3, 8, 8, generator=g) * 2 - 1,
               lambda vae, x: vae.encode(x).mean),
}


@pytest.mark.parametrize("way", list(SLICED))
@pytest.mark.parametrize("frames, per_slice", [(1, 1), (3, 1), (16, 1), (16, 3)])
def test_sliced_equals_unsliced_and_really_slices(tiny_vae, way, frames, per_slice):
    vae = tiny_vae
    network, make_input, run = SLICED[way]
    x = make_input(frames, torch.Generator().manual_seed(frames))
    batches = []
    hook = getattr(vae, network).register_forward_hook(lambda m, args, out: batches.append(len(args[0])))
    try:
        with torch.no_grad():
            vae.disable_slicing()
            full = run(vae, x)
            assert batches == [frames]
            batches.clear()
            vae.enable_slicing(per_slice)
            sliced = run(vae, x)
    finally:
        hook.remove()
        vae.disable_slicing()
    assert batches == [min(per_slice, frames - i) for i in range(0, frames, per_slice)]  # it really sliced
    # float32 rounding only: another batch size may take another convolution kernel; the raw outputs are of order
    # 1, where that is around 1e-6 (1.4e-6 seen); a slicing mistake (a frame twice, a slice lost) is of order 1
    torch.testing.assert_close(sliced, full, rtol=1e-5, atol=1e-5)


def test_an_empty_batch_gives_empty_outputs(tiny_vae):
    with torch.no_grad():
        assert tiny_vae.decode(torch.zeros(0, 4, 4, 4)).shape == (0, 3, 8, 8)
        assert tiny_vae.encode(torch.zeros(0, 3, 8, 8)).mean.shape == (0, 4, 4, 4)
        assert tiny_vae.decode_video(torch.zeros(1, 4, 0, 4, 4)).shape == (1, 0, 8, 8, 3)


# ---------------------------------------------------------------------------------------- tiling
class LocalDecoder(nn.Module):
    """A stand-in decoder whose output depends only on nearby latents: 3x3 conv, upsample, 3x3 conv.

    A pixel sees latents at most 1 latent pixel (= f pixels) + 1 pixel away, so a tile's output is
    exact except within f + 1 pixels of the tile's own edges (where zero padding replaces neighbours).
    """

    def __init__(self, factor, pointwise=False):
        super().__init__()
        k = 1 if pointwise else 3
        self.factor = factor
        self.a, self.b = nn.Conv2d(4, 8, k, padding=k // 2), nn.Conv2d(8, 3, k, padding=k // 2)

    def forward(self, z):
        return self.b(F.interpolate(F.silu(self.a(z)), scale_factor=self.factor, mode="nearest"))


def smooth_latent(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    waves = [torch.sin(2 * math.pi * (a * xx / w + b * yy / h) + c)
             for a, b, c in ((1, 0, 0), (0, 1, 1), (1, 1, 2))]
    return sum(torch.randn(1, 4, 1, 1, generator=g) * wave for wave in waves)


def with_local_decoder(pointwise=False):
    vae = AutoencoderKL.from_config(TINY).eval()
    torch.manual_seed(0)
    vae.decoder, vae.post_quant_conv = LocalDecoder(vae.spatial_factor, pointwise), None
    return vae


def near_interior_tile_edges(size_px, tile_px, overlap_px, reach):
    """(size_px,) bool: within ``reach`` pixels of a tile edge that is not the frame's edge."""
    from t2vlab.vae import tile_starts
    near = torch.zeros(size_px, dtype=torch.bool)
    for s in tile_starts(size_px, tile_px, tile_px - overlap_px):
        if s > 0:
            near[s:s + reach] = True
        if s + tile_px < size_px:
            near[s + tile_px - reach:s + tile_px] = True
    return near


def tiled_and_untiled(vae, z, tile, overlap):
    with torch.no_grad():
        vae.disable_tiling()
        full = vae.decode(z)
        vae.enable_tiling(tile, overlap)
        tiled = vae.decode(z)
        vae.disable_tiling()
    return tiled, full


@pytest.mark.parametrize("tile, overlap", [(32, 16), (32, 8), (16, 0), (24, 12)])
def test_tile_blending_weights_sum_to_one(tile, overlap):
    # pointwise decoder: every tile is exact, so tiled == untiled iff placement and weights are right
    vae = with_local_decoder(pointwise=True)
    z = torch.randn(2, 4, 24, 40)  # 48 x 80 pixels: several tiles each way, the last one clamped to the edge
    tiled, full = tiled_and_untiled(vae, z, tile, overlap)
    torch.testing.assert_close(tiled, full, rtol=1e-5, atol=1e-6)


def test_tiled_decode_differs_only_near_seams():
    vae = with_local_decoder()
    f, tile, overlap = vae.spatial_factor, 32, 16
    z = torch.randn(1, 4, 24, 40, generator=torch.Generator().manual_seed(5))
    tiled, full = tiled_and_untiled(vae, z, tile, overlap)
    diff = (tiled - full).abs()[0].amax(0)  # (H, W)
    reach = f + 1  # the stand-in decoder's reach (see LocalDecoder)
    near = near_interior_tile_edges(48, tile, overlap, reach)[:, None] | \
        near_interior_tile_edges(80, tile, overlap, reach)[None, :]
    assert diff[near].max() > 1e-3  # tiles do differ at their edges ...
    assert diff[~near].max() < 1e-5  # ... and nowhere else (float32 rounding)
    # Near a seam the wrong edge of one tile (ramp weight <= (reach - 0.5) / overlap there) is averaged with
    # the other tile, exact there, so the error is at most that fraction of a lone tile's edge error.
    from t2vlab.vae import tile_starts
    t = tile // f
    s = t - overlap // f
    starts = [(y, x) for y in tile_starts(24, t, s) for x in tile_starts(40, t, s)]
    with torch.no_grad():
        edge_err = max((vae.decode(z[..., y:y + t, x:x + t])
                        - full[..., f * y:f * (y + t), f * x:f * (x + t)])
                       .abs().max() for y, x in starts)
    assert diff.max() <= (reach - 0.5) / overlap * edge_err + 1e-6


def column_and_row_jumps(img):
    jx = (img[..., :, 1:] - img[..., :, :-1]).abs().amax(dim=(0, 1, 2))
    jy = (img[..., 1:, :] - img[..., :-1, :]).abs().amax(dim=(0, 1, 3))
    return jx, jy


def test_no_visible_seam_on_a_smooth_latent():
    # a seam is a step: a jump between neighbouring pixels larger than the image has anywhere on its own
    vae = with_local_decoder()
    z = smooth_latent(24, 40)
    tiled, full = tiled_and_untiled(vae, z, 32, 16)
    hard, _ = tiled_and_untiled(vae, z, 32, 0)
    own = max(j[4:-4].max() for j in column_and_row_jumps(full))  # away from the frame's border
    assert max(j[4:-4].max() for j in column_and_row_jumps(tiled)) <= 1.25 * own
    assert max(j[4:-4].max() for j in column_and_row_jumps(hard)) > 2 * own  # the test can see a seam


def test_tiling_with_the_real_decoder(tiny_vae):
    vae = tiny_vae
    z = smooth_latent(12, 28)
    with torch.no_grad():
        vae.enable_tiling(32, 8)  # 16x16 latent tiles, 4 latent pixels of overlap
        small = vae.decode(z[..., :12, :12])  # not larger than a tile: tiling is not used
        tiled = vae.decode(z)
        vae.disable_tiling()
        assert torch.equal(small, vae.decode(z[..., :12, :12]))
        first_tile = vae.decode(z[..., :16])
    assert tiled.shape == (1, 3, 24, 56) and torch.isfinite(tiled).all()
    # pixels covered by the first tile alone (before the second starts at latent 12 = pixel 24) are its own
    torch.testing.assert_close(tiled[..., :24], first_tile[..., :24], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- float16
def overflowing_fp16_vae(force_upcast):
    vae = randomize_(AutoencoderKL.from_config(TINY), seed=0).eval()
    vae.force_upcast = force_upcast
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e5)  # activations ~3e5: finite in float32, inf in float16
    return vae


@pytest.mark.parametrize("force_upcast", [False, True])
def test_float16_decode_upcasts_and_says_so_once(force_upcast):
    vae = overflowing_fp16_vae(force_upcast)
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = vae.decode(z)
        vae.half()
        assert not torch.isfinite(vae.decoder(vae.post_quant_conv(z.half()))).all()  # plain float16 overflows
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = vae.decode(z.half())
            vae.decode(z.half())
    assert [str(w.message).count("float32") for w in caught] == [1]
    assert ("force_upcast" in str(caught[0].message)) == force_upcast
    assert out.dtype == torch.float16 and vae.dtype == torch.float16  # the model stays float16
    assert torch.isfinite(out).all()
    assert (out.float() - expected).abs().max() < 1e-2  # float16 output rounding (values ~1, ulp 1e-3)


def test_float16_decode_without_overflow_stays_float16(tiny_vae):
    vae = AutoencoderKL.from_config({**TINY, "force_upcast": True}).eval()  # the config's value is not applied
    vae.load_state_dict(tiny_vae.state_dict())
    vae.half()
    z = torch.randn(1, 4, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no upcast, no warning
        with torch.no_grad():
            out = vae.decode(z.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
