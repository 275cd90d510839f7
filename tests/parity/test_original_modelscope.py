"""The original layout against ModelScope's own code: checkpoints written by ModelScope's
``UNetSD`` (unet_sd.py) and ``AutoencoderKL`` (autoencoder.py), loaded by t2vlab, give the same numbers.

Tolerance: 1e-5 relative (max |ours - theirs| / max |theirs|), float32. The two implementations compute
the same formulas in a different order (SDPA against an explicit softmax, pow against exp-log for the
timestep frequencies), which in float32 leaves differences of a few 1e-7 relative; 1e-5 is well above
that and far below what any wrong name, shape or transpose gives (order 1: every parameter is random).
"""

from __future__ import annotations

import pytest

pytest.importorskip("einops")  # unet_sd.py and autoencoder.py import it

import json  # noqa: E402

import torch  # noqa: E402

from t2vlab import original  # noqa: E402
from tests.helpers import randomize_, rel_err  # noqa: E402
from tests.parity.oracles import modelscope_video_synthesis  # noqa: E402

unet_sd, autoencoder = modelscope_video_synthesis()  # skips this module when modelscope is not installed
pytestmark = pytest.mark.parity
TOL = 1e-5

# two UNets of different widths and depths; context 1024 because UNetSD hard-codes it in its decoder
UNETS = {
    "narrow-2-levels": dict(unet_in_dim=4, unet_dim=32, unet_y_dim=768, unet_context_dim=1024, unet_out_dim=4,
                            unet_dim_mult=[1, 2], unet_num_heads=8, unet_head_dim=16, unet_res_blocks=1,
                            unet_attn_scales=[1, 0.5], unet_dropout=0.1, temporal_attention="True"),
    "wider-3-levels": dict(unet_in_dim=4, unet_dim=64, unet_y_dim=768, unet_context_dim=1024, unet_out_dim=4,
                           unet_dim_mult=[1, 1, 2], unet_num_heads=8, unet_head_dim=32, unet_res_blocks=2,
                           unet_attn_scales=[1, 0.5], unet_dropout=0.1, temporal_attention="True"),
}
VAES = {
    "2-levels": dict(ch=32, ch_mult=[1, 2], num_res_blocks=1),
    "3-levels": dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=2),
}


def write_configuration(folder, model_cfg):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration.json").write_text(json.dumps({"model": {"model_args": {
        "ckpt_unet": "text2video_pytorch_model.pth", "ckpt_autoencoder": "VQGAN_autoencoder.pth",
        "ckpt_clip": "open_clip_pytorch_model.bin", "max_frames": 16}, "model_cfg": model_cfg}}))
    return original.read_configuration(folder)


def modelscope_unet(cfg, seed):
    torch.manual_seed(seed)
    m = unet_sd.UNetSD(in_dim=cfg["unet_in_dim"], dim=cfg["unet_dim"], y_dim=cfg["unet_y_dim"],
                       context_dim=cfg["unet_context_dim"], out_dim=cfg["unet_out_dim"], dim_mult=cfg["unet_dim_mult"],
                       num_heads=cfg["unet_num_heads"], head_dim=cfg["unet_head_dim"],
                       num_res_blocks=cfg["unet_res_blocks"], attn_scales=cfg["unet_attn_scales"],
                       dropout=cfg["unet_dropout"], temporal_attention=True)
    return randomize_(m, seed=seed).eval()


@pytest.fixture(scope="module", params=sorted(UNETS))
def unet_pair(request, tmp_path_factory):
    cfg = UNETS[request.param]
    theirs = modelscope_unet(cfg, seed=len(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    ckpt = write_configuration(folder, cfg)
    torch.save(theirs.state_dict(), ckpt.files["unet"])  # as ModelScope's file: a plain state dict
    ours = original.load_component(ckpt, "unet")
    return theirs, ours


@pytest.mark.parametrize("frames", [1, 5])
def test_unet_equals_modelscope_unet_sd(unet_pair, frames):
    theirs, ours = unet_pair
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(2, 4, frames, 4, 4, generator=g)
    t = torch.tensor([981, 21])
    context = torch.randn(2, 7, 1024, generator=g)
    with torch.no_grad():
        expected = theirs(x, t, context)
        got = ours(x, t, context)
    assert got.shape == expected.shape
    err = rel_err(got, expected)
    assert err < TOL, f"relative error {err:.2e}"
    assert expected.abs().max() > 0.1  # a real signal: the random weights reach the output


def modelscope_vae(cfg, seed):
    ddconfig = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, attn_resolutions=[],
                    dropout=0.0, **cfg)
    torch.manual_seed(seed)
    return randomize_(autoencoder.AutoencoderKL(ddconfig, 4), seed=seed).eval()


@pytest.mark.parametrize("name", sorted(VAES))
def test_vae_decode_equals_modelscope_autoencoder(tmp_path, name):
    theirs = modelscope_vae(VAES[name], seed=len(name))
    ckpt = write_configuration(tmp_path, UNETS["narrow-2-levels"])
    # a training checkpoint of a whole latent-diffusion model, as VQGAN_autoencoder.pth is: the
    # autoencoder's tensors under first_stage_model., beside others that must be left alone
    state = {f"first_stage_model.{k}": v for k, v in theirs.state_dict().items()}
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.randn(8, 4, 3, 3)
    state["cond_stage_model.model.ln_final.weight"] = torch.randn(8)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, "optimizer_states": [{"step": 3}]},
               ckpt.files["vae"])
    ours = original.load_component(ckpt, "vae")
    levels = len(VAES[name]["ch_mult"])
    assert ours.config.block_out_channels == tuple(32 * m for m in VAES[name]["ch_mult"])
    assert ours.config.layers_per_block == VAES[name]["num_res_blocks"] and ours.spatial_factor == 2 ** (levels - 1)
    z = torch.randn(5, 4, 6, 5, generator=torch.Generator().manual_seed(0))  # 5 frames' latents
    with torch.no_grad():
        expected = theirs.decode(z)
        got = ours.decode(z)
    assert got.shape == expected.shape
    err = rel_err(got, expected)
    assert err < TOL, f"relative error {err:.2e}"
