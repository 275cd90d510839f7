"""The 3D UNet against diffusers' UNet3DConditionModel on the same (random) weights and inputs, and
weight files that each side writes and the other reads.

Tolerance: relative error (max |ours - ref| / max |ref|) at most 1e-5 in float32. Both sides do
the same arithmetic in a different grouping (fused vs. plain attention, keys shared over frames),
which in float32 moves results by a few ulps per layer; 1e-5 leaves room for that through a
couple of dozen layers and still catches any real difference (a wrong scale, order or missing
layer gives errors above 1e-2).
"""

from __future__ import annotations

import pytest
import torch

from t2vlab import UNet3DConditionModel, configs
from t2vlab.techniques.consistency import guidance_scale_embedding
from tests.helpers import UNET_CONFIGS as CONFIGS
from tests.helpers import randomize_, rel_err

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.parity

TOL = 1e-5


def make_pair(name, seed=0, **changes):
    cfg = dict(CONFIGS[name], sample_size=8, **changes)
    ref = randomize_(diffusers.UNet3DConditionModel(**cfg), seed=seed).eval()
    ours = UNet3DConditionModel.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref, cfg


def inputs(cfg, frames, batch=2, size=(8, 8), seed=1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, *size, generator=g)
    text = torch.randn(batch, 7, cfg["cross_attention_dim"], generator=g)
    t = torch.tensor([999, 10])[:batch]
    return sample, t, text


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    return make_pair(request.param)


@pytest.mark.parametrize("frames", [1, 2, 5])
@pytest.mark.parametrize("mode", ["sdpa", "math", "sliced", "chunked"])
def test_matches_diffusers(pair, frames, mode):
    ours, ref, cfg = pair
    ours.set_attention_backend("sdpa")
    ours.disable_forward_chunking()
    if mode in ("math", "sliced"):
        ours.set_attention_backend(mode, slice_size=3 if mode == "sliced" else None)
    elif mode == "chunked":
        ours.enable_forward_chunking(chunk_size=3, dim=1)
    sample, t, text = inputs(cfg, frames)
    with torch.no_grad():
        expected = ref(sample, t, text).sample
        got = ours(sample, t, text)
    assert got.shape == sample.shape
    assert rel_err(got, expected) <= TOL
    assert expected.abs().max() > 0.1  # the comparison is on a non-trivial output


def test_temporal_path_is_live(pair):
    """With random weights every frame must influence the others: the temporal layers are in play."""
    ours, _, cfg = pair
    sample, t, text = inputs(cfg, 3)
    with torch.no_grad():
        base = ours(sample, t, text)
        changed = sample.clone()
        changed[:, :, 2] += 1.0
        out = ours(changed, t, text)
    assert (out[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3


def test_odd_sizes_and_scalar_timestep():
    """Sizes that are not a multiple of 2^levels take the 'upsample to the skip's size' path."""
    ours, ref, cfg = make_pair("four-levels-wide-heads", seed=3)
    sample, _, text = inputs(cfg, 2, batch=1, size=(6, 10))
    with torch.no_grad():
        expected = ref(sample, 500, text).sample
        got = ours(sample, 500, text)
    assert rel_err(got, expected) <= TOL


def test_attention_slicing_and_chunking_api_match():
    ours, ref, cfg = make_pair("two-levels", seed=4)
    sample, t, text = inputs(cfg, 2)
    with torch.no_grad():
        expected = ref(sample, t, text).sample
        for slice_size in ("auto", "max", 2):
            ours.enable_attention_slicing(slice_size)
            assert rel_err(ours(sample, t, text), expected) <= TOL
        ours.disable_attention_slicing()
        ours.enable_forward_chunking()  # diffusers' default: one batch row at a time
        assert rel_err(ours(sample, t, text), expected) <= TOL


def test_full_size_layout_on_meta_device():
    cfg = configs.UNET
    with torch.device("meta"):
        ours = UNet3DConditionModel.from_config(cfg)
        ref = diffusers.UNet3DConditionModel.from_config(cfg)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.num_parameters() == configs.PARAMETERS["unet"] == 1_411_233_860


# ----------------------------------------------------------------------------------- from_pretrained
@pytest.mark.parametrize("safe,variant", [(True, None), (False, None), (True, "fp16"), (False, "fp16")])
def test_from_pretrained_reads_diffusers_save_pretrained(tmp_path, safe, variant):
    cfg = dict(CONFIGS["two-levels"], sample_size=8)
    ref = randomize_(diffusers.UNet3DConditionModel(**cfg), seed=5).eval()
    if variant == "fp16":
        ref = ref.half()
    ref.save_pretrained(tmp_path / "unet", safe_serialization=safe, variant=variant)
    ours = UNet3DConditionModel.from_pretrained(tmp_path, subfolder="unet", variant=variant,
                                                torch_dtype=torch.float32)
    assert ours.dtype == torch.float32
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v.float()), k
    half = UNet3DConditionModel.from_pretrained(tmp_path / "unet", variant=variant, torch_dtype=torch.float16)
    assert half.dtype == torch.float16
    assert not any(p.is_meta for p in half.parameters())


def test_save_pretrained_round_trip_is_readable_by_diffusers(tmp_path):
    ours = randomize_(UNet3DConditionModel.from_config(dict(CONFIGS["two-levels"], sample_size=8)), seed=6)
    ours.save_pretrained(tmp_path)
    ref = diffusers.UNet3DConditionModel.from_pretrained(tmp_path)
    for k, v in ours.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), k


# ------------------------------------------------------------------ guidance embedding (time_cond_proj_dim)
@pytest.mark.parametrize("name,dim", [("two-levels", 256), ("three-levels-2-layers", 12)])
def test_guidance_embedded_unet_matches_diffusers(name, dim, tmp_path):
    """A UNet with time_cond_proj_dim (T2V-Turbo's 256 among them): the same random weights, cond_proj's
    included (randomize_ fills every parameter), and the same timestep_cond give the same output; the
    guidance scale moves it (so the comparison is not blind to the condition). diffusers' saved folder
    (config.json with time_cond_proj_dim) loads here with the parameter name time_embedding.cond_proj.weight."""
    ours, ref, cfg = make_pair(name, seed=2, time_cond_proj_dim=dim)
    assert ours.time_embedding.cond_proj.weight.shape == (cfg["block_out_channels"][0], dim)
    sample, t, text = inputs(cfg, 3)
    cond = guidance_scale_embedding(torch.tensor([7.5, 2.0]), embedding_dim=dim)
    with torch.no_grad():
        expected = ref(sample, t, text, timestep_cond=cond).sample
        other_w = ref(sample, t, text, timestep_cond=guidance_scale_embedding(torch.tensor([1.0, 2.0]), dim)).sample
        got = ours(sample, t, text, timestep_cond=cond)
        assert rel_err(got, expected) <= TOL
        assert rel_err(other_w, expected) > 1e-3
        ref.save_pretrained(tmp_path)
        loaded = UNet3DConditionModel.from_pretrained(tmp_path).eval()
        assert loaded.config.time_cond_proj_dim == dim
        assert rel_err(loaded(sample, t, text, timestep_cond=cond), expected) <= TOL
