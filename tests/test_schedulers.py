"""Schedulers: following the generator, the add_noise / x0 property, configs, the dropdown names and
error messages. Trajectory and config parity with diffusers 0.42.1 (the oracle) is in
tests/parity/test_schedulers_parity.py.
"""

import ast
import pathlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import t2vlab.schedulers as ours
from t2vlab import atomic

from .helpers import SCHEDULER_CKPT as CKPT
from .helpers import SCHEDULER_SHAPE as SHAPE
from .helpers import fails_half_way, trajectory
from .helpers import rel_err as rel

CLASSES = list(ours.SCHEDULER_CLASSES)
DPM = "DPMSolverMultistepScheduler"


def test_stochastic_schedulers_follow_the_generator():
    """Same seed -> same trajectory, different seed -> different (so the parity tests really test the draw)."""
    for name, kwargs in (("DDPMScheduler", {}), ("DDIMScheduler", {"eta": 1.0}),
                         ("EulerAncestralDiscreteScheduler", {})):
        s = getattr(ours, name).from_config(CKPT)
        a = trajectory(s, 5, torch.float64, kwargs, seed=0)["samples"][-1]
        b = trajectory(s, 5, torch.float64, kwargs, seed=0)["samples"][-1]
        c = trajectory(s, 5, torch.float64, kwargs, seed=1)["samples"][-1]
        assert torch.equal(a, b) and rel(a, c) > 1e-3, name


# ----------------------------------------------------------------------------- add_noise -> x0


def _alpha_sigma(sched, t):
    """VP (alpha, sigma) of ``t`` as the scheduler defines it (oracle written from the definitions)."""
    if isinstance(sched, (ours.SigmaScheduler, ours.DPMSolverMultistepScheduler)):
        s = sched.sigmas[sched.index_for_timestep(t)].double()
        return 1 / (s**2 + 1) ** 0.5, s / (s**2 + 1) ** 0.5, s
    abar = sched.alphas_cumprod[int(t)].double()
    return abar**0.5, (1 - abar) ** 0.5, ((1 - abar) / abar) ** 0.5


@settings(max_examples=60, deadline=None)
@given(cls_name=st.sampled_from(CLASSES), pred=st.sampled_from(["epsilon", "v_prediction", "sample"]),
       n=st.integers(4, 60), frac=st.floats(0, 1), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_add_noise_then_exact_prediction_recovers_x0(cls_name, pred, n, frac, shape, batch, seed):
    sched = getattr(ours, cls_name).from_config(CKPT, prediction_type=pred)
    sched.set_timesteps(n)
    t = sched.timesteps[min(int(frac * len(sched.timesteps)), len(sched.timesteps) - 1)]
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    eps = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    noisy = sched.add_noise(x0, eps, t.repeat(batch))
    alpha, sigma, sigma_ve = _alpha_sigma(sched, t)
    exact = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[pred]
    sched.scale_model_input(noisy, t)
    got = sched.step(exact, t, noisy).pred_original_sample
    # float32 tables: ~6e-8 relative per coefficient; x0 = (x - sigma eps) / alpha amplifies the eps
    # term by sigma_VE (<= 14.6 here); Euler also rounds the sample to float32. 10x margin.
    tol = 1e-6 * (1 + sigma_ve.item()) * max(x0.abs().max().item(), eps.abs().max().item())
    assert (got - x0).abs().max().item() <= tol


# ----------------------------------------------------------------------------- config


def test_from_config_dispatches_on_class_name_and_accepts_overrides():
    s = ours.from_config({**CKPT, "_class_name": "EulerDiscreteScheduler"}, timestep_spacing="trailing")
    assert isinstance(s, ours.EulerDiscreteScheduler) and s.config.timestep_spacing == "trailing"
    with pytest.raises(ValueError, match="_class_name"):
        ours.from_config({**CKPT, "_class_name": "UniPCMultistepScheduler"})


def test_from_name_dropdown():
    expected = {"ddim": ours.DDIMScheduler, "ddpm": ours.DDPMScheduler, "dpm++": ours.DPMSolverMultistepScheduler,
                "dpm++-karras": ours.DPMSolverMultistepScheduler, "euler": ours.EulerDiscreteScheduler,
                "euler-a": ours.EulerAncestralDiscreteScheduler, "pndm": ours.PNDMScheduler,
                "lms": ours.LMSDiscreteScheduler}
    assert set(expected) <= set(ours.SCHEDULER_NAMES)
    for name, cls in expected.items():
        s = ours.from_name(name, CKPT)
        assert type(s) is cls and s.config.beta_end == 0.012
    dpm = ours.from_name("dpm++", CKPT)
    assert (dpm.config.algorithm_type, dpm.config.solver_order, dpm.config.use_karras_sigmas) == \
        ("dpmsolver++", 2, False)
    assert ours.from_name("dpm++-karras", CKPT).config.use_karras_sigmas is True
    with pytest.raises(ValueError, match="ddim.*dpm\\+\\+.*euler-a"):
        ours.from_name("heun", CKPT)


def test_interface_details():
    import t2vlab

    for name in CLASSES:
        assert getattr(t2vlab, name) is getattr(ours, name)
    s = ours.DDIMScheduler.from_config(CKPT)
    s.set_timesteps(25)
    assert s.timesteps.dtype == torch.int64 and s.timesteps.ndim == 1 and s.order == 1
    x = torch.randn(SHAPE)
    out = s.step(torch.randn(SHAPE), s.timesteps[0], x, eta=0.0, generator=None, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == x.shape
    d = ours.DPMSolverMultistepScheduler.from_config(CKPT)
    d.set_timesteps(25)
    d.step(torch.randn(SHAPE), d.timesteps[0], x, eta=0.3)  # eta accepted and ignored


def test_save_pretrained_round_trips_and_an_interrupted_one_leaves_the_old_file(tmp_path, monkeypatch):
    s = ours.DDIMScheduler.from_config(CKPT)
    file = pathlib.Path(s.save_pretrained(tmp_path))
    assert ours.DDIMScheduler.from_pretrained(tmp_path).config == s.config
    old = file.read_bytes()
    monkeypatch.setattr(pathlib.Path, "write_bytes", fails_half_way(0))
    with pytest.raises(OSError, match="injected"):
        ours.DDIMScheduler.from_config(CKPT, timestep_spacing="trailing").save_pretrained(tmp_path)
    assert file.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [file.name]
    assert not atomic.leftovers(tmp_path)


def test_package_does_not_import_diffusers():
    root = pathlib.Path(ours.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "diffusers" for n in names), path


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls_name", CLASSES)
def test_bad_input_gets_a_clear_error(cls_name):
    cls = getattr(ours, cls_name)
    s = cls.from_config(CKPT)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(SHAPE), torch.tensor(999), torch.zeros(SHAPE))
    for n in (0, 1001, -3, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            s.set_timesteps(n)
    with pytest.raises(ValueError, match="beta_schedule"):
        cls.from_config({**CKPT, "beta_schedule": "quadratic"})
    with pytest.raises(ValueError, match="prediction_type"):
        cls.from_config({**CKPT, "prediction_type": "flow"})
    with pytest.raises(ValueError, match="timestep_spacing"):
        cls.from_config({**CKPT, "timestep_spacing": "uniform"})
    with pytest.raises(TypeError, match="no_such_key"):
        cls.from_config(CKPT, no_such_key=1)


@pytest.mark.parametrize("cls_name, key, value", [
    ("DDIMScheduler", "thresholding", True), ("DDIMScheduler", "rescale_betas_zero_snr", True),
    ("DDPMScheduler", "variance_type", "learned_range"), (DPM, "use_exponential_sigmas", True),
    (DPM, "algorithm_type", "sde-dpmsolver++"), (DPM, "use_lu_lambdas", True),
    ("EulerDiscreteScheduler", "interpolation_type", "log_linear"), ("LMSDiscreteScheduler", "use_beta_sigmas", True),
])
def test_unimplemented_options_are_refused(cls_name, key, value):
    with pytest.raises(NotImplementedError, match=key):
        getattr(ours, cls_name).from_config(CKPT, **{key: value})


def test_dpmsolver_with_zero_final_sigma_is_refused_like_diffusers():
    with pytest.raises(ValueError, match="final_sigmas_type"):
        ours.DPMSolverMultistepScheduler.from_config(CKPT, algorithm_type="dpmsolver")


@pytest.mark.parametrize("name", ["dpm++", "euler", "euler-a", "lms", "pndm"])
def test_a_second_pass_without_set_timesteps_says_what_to_do(name):
    """Stateful samplers keep a step counter (and past outputs): a second pass over the same schedule
    would index past its end (an IndexError) or silently reuse stale history. It must say to reset."""
    s = ours.from_name(name)
    s.set_timesteps(4)
    x = torch.randn(SHAPE)
    for t in s.timesteps:
        x = s.step(torch.randn(SHAPE), t, x).prev_sample
    with pytest.raises(ValueError, match=r"set_timesteps\(num_inference_steps\) again"):
        s.step(torch.randn(SHAPE), s.timesteps[0], x)
    s.set_timesteps(4)  # after a reset the same pass runs again
    for t in s.timesteps:
        x = s.step(torch.randn(SHAPE), t, x).prev_sample
    assert torch.isfinite(x).all()
