"""Consistency-model maths (t2vlab.techniques.consistency) against diffusers 0.42.1: the guidance-scale
embedding of LatentConsistencyModelPipeline and the boundary-condition scalings of LCMScheduler.

Tolerance 1e-6 (absolute, on values of size <= 1): both sides compute in float32 with the same operations in
the same order, so the numbers agree to the last bit here; 1e-6 leaves room for another build's sin/cos
and still catches a swapped sin/cos, a wrong frequency base or a missing x 1000 (all > 1e-2).
"""

import pytest
import torch

from t2vlab.techniques.consistency import boundary_scalings, guidance_scale_embedding

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.parity

TOL = 1e-6


@pytest.mark.parametrize("embedding_dim", [256, 512, 255, 4])
@pytest.mark.parametrize("w", [[7.5], [0.0, 1.0, 2.5, 7.5, 15.0], [3.0, 3.0]])
def test_guidance_scale_embedding_matches_diffusers(w, embedding_dim):
    pipeline = diffusers.LatentConsistencyModelPipeline
    ref = pipeline.get_guidance_scale_embedding(None, torch.tensor(w), embedding_dim=embedding_dim)
    got = guidance_scale_embedding(torch.tensor(w), embedding_dim=embedding_dim)
    assert got.shape == ref.shape == (len(w), embedding_dim) and got.dtype == ref.dtype == torch.float32
    assert (got - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("timestep_scaling", [10.0, 4.0, 1.0, 0.1])
def test_boundary_scalings_match_diffusers_lcm_scheduler(timestep_scaling):
    ref = diffusers.LCMScheduler(timestep_scaling=timestep_scaling)
    for t in [0, 1, 19, 259, 999]:
        for value in (t, torch.tensor(t)):  # a number (float64 arithmetic) and an int64 tensor (float32)
            c_skip, c_out = boundary_scalings(value, timestep_scaling)
            r_skip, r_out = ref.get_scalings_for_boundary_condition_discrete(value)
            assert abs(float(c_skip) - float(r_skip)) <= TOL and abs(float(c_out) - float(r_out)) <= TOL, t
