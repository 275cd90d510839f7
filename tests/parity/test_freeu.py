"""FreeU against diffusers' ``UNet3DConditionModel.enable_freeu`` on the same random weights.

Tolerance 1e-5 relative (max |ours - ref| / max |ref|), float32: as in tests/test_unet.py, both sides
do the same arithmetic grouped differently (fused vs. plain attention, keys shared over frames), a
few ulps per layer; FreeU's FFTs are the same calls on the same tensors. A wrong level, a wrong half of
the channels or a wrong frequency square gives errors above 1e-3 (checked below: FreeU on changes
the output by far more than the tolerance).
"""

from __future__ import annotations

import pytest
import torch

from t2vlab import UNet3DConditionModel

from ..helpers import randomize_, rel_err

diffusers = pytest.importorskip("diffusers")

TOL = 1e-5

CONFIGS = {
    "three-levels": dict(block_out_channels=(16, 32, 32), layers_per_block=1, attention_head_dim=8,
                         norm_num_groups=4, cross_attention_dim=24,
                         down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                         up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")),
    "four-levels-2-layers": dict(block_out_channels=(16, 16, 32, 32), layers_per_block=2, attention_head_dim=8,
                                 norm_num_groups=8, cross_attention_dim=16),
}
SETTINGS = {"ms-1.7b": dict(s1=0.9, s2=0.2, b1=1.2, b2=1.4), "sd21": dict(s1=0.9, s2=0.2, b1=1.1, b2=1.2),
            "strong": dict(s1=0.5, s2=0.3, b1=1.6, b2=1.8)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    cfg = dict(CONFIGS[request.param], sample_size=8)
    ref = randomize_(diffusers.UNet3DConditionModel(**cfg), seed=3).eval()
    ours = UNet3DConditionModel.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref, cfg


def inputs(cfg, frames=3, size=(8, 8), seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, frames, *size, generator=g), torch.tensor([999, 10]),
            torch.randn(2, 7, cfg["cross_attention_dim"], generator=g))


@pytest.mark.parity
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("size", [(8, 8), (12, 8)])  # 12x8: a 3x2 map at the bottom, not a power of 2
def test_freeu_matches_diffusers(pair, setting, size):
    ours, ref, cfg = pair
    sample, t, text = inputs(cfg, size=size)
    with torch.no_grad():
        plain = ref(sample, t, text).sample
        ref.enable_freeu(**SETTINGS[setting])
        ours.enable_freeu(**SETTINGS[setting])
        try:
            expected = ref(sample, t, text).sample
            got = ours(sample, t, text)
        finally:
            ref.disable_freeu()
            ours.disable_freeu()
    assert rel_err(got, expected) <= TOL
    assert rel_err(plain, expected) > 100 * TOL  # FreeU really changed the output: the check has teeth


@pytest.mark.parity
def test_disable_freeu_gives_diffusers_plain_output(pair):
    ours, ref, cfg = pair
    sample, t, text = inputs(cfg)
    with torch.no_grad():
        ours.enable_freeu(**SETTINGS["ms-1.7b"])
        ours.disable_freeu()
        assert rel_err(ours(sample, t, text), ref(sample, t, text).sample) <= TOL
