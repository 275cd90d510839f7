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
from t2vlab.techniques.consistency import boundary_scalings

from .helpers import SCHEDULER_CKPT as CKPT
from .helpers import SCHEDULER_SHAPE as SHAPE
from .helpers import fails_half_way, trajectory
from .helpers import rel_err as rel

CLASSES = list(ours.SCHEDULER_CLASSES)
DPM = "DPMSolverMultistepScheduler"


def test_stochastic_schedulers_follow_the_generator():
    """Same seed -> same trajectory, different seed -> different (so the parity tests really test the draw)."""
    for name, kwargs in (("DDPMScheduler", {}), ("DDIMScheduler", {"eta": 1.0}),
                         ("EulerAncestralDiscreteScheduler", {}), ("LCMScheduler", {})):
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
    lcm = cls_name == "LCMScheduler"
    sched.set_timesteps(min(n, sched.config.original_inference_steps) if lcm else n)
    t = sched.timesteps[min(int(frac * len(sched.timesteps)), len(sched.timesteps) - 1)]
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    eps = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    noisy = sched.add_noise(x0, eps, t.repeat(batch))
    alpha, sigma, sigma_ve = _alpha_sigma(sched, t)
    exact = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[pred]
    sched.scale_model_input(noisy, t)
    got = sched.step(exact, t, noisy).pred_original_sample
    if lcm:  # LCM returns the consistency function f = c_skip x_t + c_out x0_hat, not x0_hat itself
        c_skip, c_out = boundary_scalings(t.double(), sched.config.timestep_scaling)
        x0 = c_skip * noisy + c_out * x0
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
                "lms": ours.LMSDiscreteScheduler, "lcm": ours.LCMScheduler}
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
    ("LCMScheduler", "thresholding", True), ("LCMScheduler", "rescale_betas_zero_snr", True),
])
def test_unimplemented_options_are_refused(cls_name, key, value):
    with pytest.raises(NotImplementedError, match=key):
        getattr(ours, cls_name).from_config(CKPT, **{key: value})


def test_dpmsolver_with_zero_final_sigma_is_refused_like_diffusers():
    with pytest.raises(ValueError, match="final_sigmas_type"):
        ours.DPMSolverMultistepScheduler.from_config(CKPT, algorithm_type="dpmsolver")


@pytest.mark.parametrize("name", ["dpm++", "euler", "euler-a", "lms", "pndm", "lcm"])
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


# ----------------------------------------------------------------------------- LCM
LCM = ours.LCMScheduler


def timesteps_of(sched, n=None, **kwargs):
    sched.set_timesteps(n, **kwargs)
    return sched.timesteps.tolist()


def test_t2v_turbo_spacing_is_the_stride_selection():
    """T2V-Turbo's scheduler takes every (50 // n)-th of its 50 distillation timesteps 20 j - 1 from the top;
    diffusers' LCMScheduler takes the floor(50 i / n)-th (the parity file checks that one against diffusers)."""
    turbo = LCM(timestep_selection="stride")
    assert timesteps_of(turbo, 4) == [999, 759, 519, 279]
    assert timesteps_of(turbo, 8) == [999, 879, 759, 639, 519, 399, 279, 159]
    assert timesteps_of(turbo, 1) == [999] and timesteps_of(turbo, 50) == list(range(999, 0, -20))
    assert timesteps_of(LCM(), 4) == [999, 759, 499, 259]
    assert timesteps_of(ours.from_name("lcm", CKPT, timestep_selection="stride"), 4) == [999, 759, 519, 279]


def test_even_upper_selection_is_even_over_one_more_step_with_the_lowest_left_out():
    """"even_upper" (t2vlab distill's students, "lcm-upper") takes the floor(50 i / (n + 1))-th of the 50 points from
    the top, i = 0..n-1: the last step starts higher than "even"'s; n = 50 still takes all 50, each once."""
    upper = LCM(timestep_selection="even_upper")
    assert timesteps_of(upper, 4) == [999, 799, 599, 399]
    assert timesteps_of(upper, 8) == [999, 899, 779, 679, 559, 459, 339, 239]
    assert timesteps_of(upper, 2) == [999, 679] and timesteps_of(upper, 1) == [999]
    assert timesteps_of(upper, 50) == list(range(999, 0, -20))
    assert timesteps_of(upper, 49) == list(range(999, 19, -20))
    assert timesteps_of(ours.from_name("lcm-upper", CKPT), 4) == [999, 799, 599, 399]


def test_lcm_swaps_with_from_config_like_the_others():
    """The checkpoint's DDIM config -> LCM -> DDIM gives the DDIM config back; LCM's own keys (ours too)
    survive a trip through another sampler; the base class builds what _class_name says."""
    ddim = ours.DDIMScheduler.from_config(CKPT)
    lcm = LCM.from_config(ddim.config)
    assert (lcm.config.beta_end, lcm.config.set_alpha_to_one, lcm.config.timestep_scaling) == (0.012, False, 10.0)
    assert dict(ours.DDIMScheduler.from_config(lcm.config).config) == dict(ddim.config)
    mcm = LCM.from_config(CKPT, timestep_scaling=4.0, original_inference_steps=40, timestep_selection="stride")
    back = LCM.from_config(ours.DPMSolverMultistepScheduler.from_config(mcm.config).config)
    assert (back.config.timestep_scaling, back.config.original_inference_steps, back.config.timestep_selection) == \
        (4.0, 40, "stride")
    assert type(ours.Scheduler.from_config(mcm.config)) is LCM
    assert timesteps_of(back, 4) == timesteps_of(mcm, 4) == [999, 749, 499, 249]  # 25 j - 1, j = 40, 30, 20, 10


def test_custom_timesteps_with_strength_do_not_noise_the_last_step():
    """strength < 1 keeps the lowest int(n strength) custom timesteps and the last of them returns f without
    noise. (diffusers keeps num_inference_steps at the full list's length there, so its last step noises.)"""
    s = LCM()
    assert timesteps_of(s, timesteps=[999, 759, 519, 279], strength=0.5) == [519, 279]
    assert s.num_inference_steps == 2
    x = torch.randn(SHAPE)
    for t in s.timesteps:
        out = s.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(0))
        x = out.prev_sample
    assert torch.equal(out.prev_sample, out.denoised)


def test_lcm_set_timesteps_refuses_bad_arguments_by_name():
    s = LCM()
    cases = [({"num_inference_steps": 51}, "num_inference_steps=51 is more than the 50"),
             ({"num_inference_steps": 30, "strength": 0.5}, "num_inference_steps=30 is more than the 25"),
             ({"num_inference_steps": 4, "original_inference_steps": 1001}, "original_inference_steps"),
             ({"num_inference_steps": 4, "strength": 0}, "strength"),
             ({"num_inference_steps": 4, "strength": 1.5}, "strength"),
             ({"num_inference_steps": 4, "timesteps": [999, 499]}, "not both"),
             ({}, "num_inference_steps"),
             ({"timesteps": [499, 999]}, "strictly descending"),
             ({"timesteps": [999, 999]}, "strictly descending"),
             ({"timesteps": []}, "non-empty"),
             ({"timesteps": [1000, 500]}, "timesteps"),
             ({"timesteps": [500, -1]}, "timesteps"),
             ({"timesteps": [500.5]}, "timesteps"),
             ({"timesteps": "999"}, "timesteps"),
             ({"timesteps": [999, 499], "strength": 0.4}, "strength=0.4 leaves none")]
    for kwargs, word in cases:
        with pytest.raises(ValueError, match=word):
            s.set_timesteps(**kwargs)
    for key, value in (("original_inference_steps", 0), ("original_inference_steps", 1001),
                       ("timestep_scaling", 0.0), ("timestep_scaling", float("inf")), ("timestep_selection", "turbo")):
        with pytest.raises(ValueError, match=key):
            LCM(**{key: value})


@pytest.mark.parametrize("name", ["dpm++", "euler", "euler-a", "lcm"])
def test_step_index_counts_the_steps_taken_and_set_timesteps_resets_it(name):
    """The stateful samplers (those that keep a history or a position in their schedule, as diffusers' do)."""
    sched = ours.from_name(name, CKPT)
    sched.set_timesteps(4)
    assert sched.step_index is None  # before the first step
    x = torch.zeros(1, 4, 2, 2, 2)
    for i, t in enumerate(sched.timesteps):
        x = sched.step(torch.zeros_like(x), t, x).prev_sample
        assert sched.step_index == i + 1
    sched.set_timesteps(3)
    assert sched.step_index is None
