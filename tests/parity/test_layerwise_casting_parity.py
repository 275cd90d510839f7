"""Our layerwise casting against diffusers' ``enable_layerwise_casting`` on its UNet3DConditionModel, same
weights, same storage and compute dtypes, default skips on both sides.

Both sides must store the same tensors low (compared name by name), hold the same parameter bytes, and
compute the same numbers. Tolerance: relative error (max |ours - ref| / max |ref|) at most 1e-5 with float32
compute, the plain UNet parity's tolerance (tests/parity/test_unet_parity.py): once both have rounded the
same weights to the storage dtype they do the same float32 arithmetic, grouped differently by a few ulps per
layer. With bfloat16 compute (model in bfloat16) at most 2e-2: bfloat16 keeps 8 bits of mantissa
(eps 7.8e-3), so a different grouping moves a result by about one eps per few layers. Measured: 0 in
both cases on this CPU. Each case also checks that the rounding is in play: the output moves from the
uncast model's by more than twice the tolerance (float8 storage moves it by 9 to 19%, bfloat16 storage by
0.6%), so a side that cast nothing would fail.
"""

from __future__ import annotations

import pytest
import torch

from t2vlab import UNet3DConditionModel
from t2vlab.layerwise_casting import parameter_bytes
from t2vlab.weights import TINY_UNET
from tests.helpers import UNET_CONFIGS, randomize_, rel_err

diffusers = pytest.importorskip("diffusers")
pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("one_thread")]

THREE_LEVELS = dict(UNET_CONFIGS["three-levels-2-layers"], sample_size=8)
CASES = [  # config, storage, compute, tolerance
    pytest.param(TINY_UNET, torch.float8_e4m3fn, torch.float32, 1e-5, id="tiny-float8_e4m3fn-float32"),
    pytest.param(TINY_UNET, torch.bfloat16, torch.float32, 1e-5, id="tiny-bfloat16-float32"),
    pytest.param(TINY_UNET, torch.float8_e5m2, torch.float32, 1e-5, id="tiny-float8_e5m2-float32"),
    pytest.param(TINY_UNET, torch.float8_e4m3fn, torch.bfloat16, 2e-2, id="tiny-float8_e4m3fn-bfloat16"),
    pytest.param(THREE_LEVELS, torch.float8_e4m3fn, torch.float32, 1e-5, id="three-levels-float8_e4m3fn-float32"),
]


def make_pair(cfg, dtype, seed=0):
    ref = randomize_(diffusers.UNet3DConditionModel(**cfg), seed=seed).eval()
    ours = UNet3DConditionModel.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.to(dtype), ref.to(dtype)


def inputs(cfg, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 3, 8, 8, generator=g).to(dtype)
    return sample, torch.tensor([999, 10]), torch.randn(2, 7, cfg["cross_attention_dim"], generator=g).to(dtype)


@pytest.mark.parametrize("cfg, storage, compute, tol", CASES)
def test_layerwise_casting_matches_diffusers(cfg, storage, compute, tol):
    ours, ref = make_pair(cfg, compute)
    x = inputs(cfg, compute)
    with torch.no_grad():
        uncast = ref(*x).sample
        ours.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
        ref.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
        got, expected = ours(*x), ref(*x).sample

    ours_dtypes = {k: v.dtype for k, v in ours.state_dict().items()}
    assert ours_dtypes == {k: v.dtype for k, v in ref.state_dict().items()}  # the same tensors stored low
    assert sum(d == storage for d in ours_dtypes.values()) > len(ours_dtypes) / 2
    assert parameter_bytes(ours) == parameter_bytes(ref)
    assert ours.dtype == ref.dtype == compute
    assert rel_err(got, expected) <= tol
    assert rel_err(expected, uncast) > 2 * tol
