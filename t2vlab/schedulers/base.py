"""Shared maths of every scheduler: beta schedules, timestep spacing, the x0/epsilon conversions,
sigma helpers (Karras, sigma -> t), and the base classes' ``set_timesteps`` / ``step`` / ``add_noise``.
Config handling (reading, carrying over, saving) is in ``config.py``; the noise draw in ``t2vlab.noise``.

Notation used in all scheduler files (DDPM paper):
    beta_t                      noise added at training step t
    abar_t = prod_{s<=t}(1 - beta_s)      ("alphas_cumprod")
    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps                 (variance preserving, "VP")
    sigma_t = sqrt((1 - abar_t) / abar_t),  x_t / sqrt(abar_t) = x0 + sigma_t * eps   (k-diffusion, "VE")

Numerics deliberately follow diffusers: tables (betas, abar, sigmas) are float32 tensors and
per-step coefficients are float32 0-d tensors, so that a trajectory matches diffusers to ~1e-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import is_number, number, positive_int
from .config import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS, ConfigMixin


@dataclass
class SchedulerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None

    def __getitem__(self, i):
        return (self.prev_sample, self.pred_original_sample)[i]


# ----------------------------------------------------------------------------- math helpers


def make_betas(cfg) -> torch.Tensor:
    """beta_t for t = 0..T-1, float32.
    linear:            beta_t = linspace(beta_start, beta_end)
    scaled_linear:     beta_t = linspace(sqrt(beta_start), sqrt(beta_end))^2        (Stable Diffusion)
    squaredcos_cap_v2: beta_t = min(1 - abar(t+1/T) / abar(t/T), 0.999),
                       abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2                 (Nichol & Dhariwal)
    """
    n, b0, b1 = cfg["num_train_timesteps"], cfg["beta_start"], cfg["beta_end"]
    if cfg.get("trained_betas") is not None:
        return torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    kind = cfg["beta_schedule"]
    if kind == "linear":
        return torch.linspace(b0, b1, n, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":
        abar = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
        return torch.tensor([min(1 - abar[i + 1] / abar[i], 0.999) for i in range(n)], dtype=torch.float32)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {kind!r}")


def spaced_timesteps(spacing: str, n: int, num_train: int, steps_offset: int = 0, *,
                     extra: int = 0, round_linspace: bool = True) -> np.ndarray:
    """n inference timesteps in [0, T), descending, as float64 (callers cast).
    leading:  k * (T // m) + steps_offset, k = m-1..0             (m = n + extra)
    trailing: round(T - k * T / n) - 1,    k = 0..n-1   (always includes T-1)
    linspace: round(linspace(0, T-1, m)) reversed   (unrounded for the sigma schedulers)
    ``extra`` points are generated then the smallest dropped (DPM-Solver uses m = n + 1).
    """
    m = n + extra
    if spacing == "linspace":
        t = np.linspace(0, num_train - 1, m)
        t = (t.round() if round_linspace else t)[::-1][:n]
    elif spacing == "leading":
        t = (np.arange(m) * (num_train // m))[::-1][:n].astype(np.float64) + steps_offset
    elif spacing == "trailing":
        t = np.round(np.arange(num_train, 0, -num_train / n)) - 1
    else:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    return np.array(t, dtype=np.float64)  # a fresh array: torch.from_numpy refuses negative strides


def vp_x0_eps(prediction_type: str, model_output, sample, alpha, sigma):
    """Convert a model output to (x0, eps) where sample = alpha * x0 + sigma * eps
    and v = alpha * eps - sigma * x0 (Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha, model_output
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output, alpha * model_output + sigma * sample
    if prediction_type == "sample":
        return model_output, (sample - alpha * model_output) / sigma
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def ve_x0(prediction_type: str, model_output, x, sigma):
    """x0 from a model output in k-diffusion form, x = x0 + sigma * eps (x is the unscaled sample).
    The model saw c_in * x with c_in = 1 / sqrt(sigma^2 + 1), so for v: x0 = c_in^2 x - sigma c_in v."""
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma: linear interpolation in log(sigma), clamped to [0, T-1]."""
    log_train = np.log(train_sigmas.astype(np.float64))
    return np.interp(np.log(np.maximum(sigmas, 1e-10)), log_train, np.arange(len(train_sigmas)))


def check_step_args(model_output, timestep, sample, eta, generator):
    """ValueError naming the argument, before any arithmetic: tensors of one shape, a real timestep, eta in [0, 1]."""
    for name, v in (("model_output", model_output), ("sample", sample)):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {getattr(v, 'dtype', type(v).__name__)}")
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample has {tuple(sample.shape)}")
    t = timestep.item() if isinstance(timestep, torch.Tensor) and timestep.numel() == 1 else timestep
    if not is_number(t) or abs(t) > 1e9:
        raise ValueError(f"timestep must be one number from the schedule, got {timestep!r:.60}")
    number("eta", eta, low=0, high=1)
    if generator is not None and not isinstance(generator, (torch.Generator, list, tuple)):
        raise ValueError(f"generator must be a torch.Generator (or a list of them), got {type(generator).__name__}")


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = values.flatten()
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


# ----------------------------------------------------------------------------- base class


class Scheduler(ConfigMixin):
    """Base: ``set_timesteps``, ``step``, ``add_noise`` (config in and out: ``ConfigMixin``).

    Subclasses set their config keys (``_defaults``, ``_only``; see ``ConfigMixin``) and implement
    ``_set_timesteps`` and ``_step``.
    """

    is_base_class = True  # from_config here builds the class a config names
    order = 1
    init_noise_sigma = 1.0
    stateless = False  # True: a step reads only (model output, timestep, sample), no counter or past outputs, so it
    # can be taken again (RePaint's resampling, techniques.repaint)

    def __init__(self, **config):
        cfg = self._init_config(config)
        self.betas = make_betas(cfg)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.num_inference_steps = None
        self.timesteps = None
        self._step_index = None

    def __len__(self):
        return self._cfg["num_train_timesteps"]

    # ---- timesteps and stepping ------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device=None):
        T = self._cfg["num_train_timesteps"]
        n = positive_int("num_inference_steps", num_inference_steps, high=T, hint=f" (num_train_timesteps={T})")
        self.num_inference_steps = n
        self._step_index = None
        self._set_timesteps(n, device)

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None, return_dict=True, **kwargs):
        """One denoising step: returns ``.prev_sample`` and ``.pred_original_sample`` (x0 estimate).
        Only DDIM uses ``eta``; unknown keyword arguments are ignored."""
        if self.timesteps is None:
            raise ValueError(f"{type(self).__name__}.step() called before set_timesteps(); "
                             "call set_timesteps(num_inference_steps) first")
        if self.steps_taken() >= len(self.timesteps):
            raise ValueError(f"{type(self).__name__} has taken all {len(self.timesteps)} steps of its schedule; call "
                             "set_timesteps(num_inference_steps) again before another pass (it keeps a step counter "
                             "and, for multistep samplers, the last model outputs)")
        check_step_args(model_output, timestep, sample, eta, generator)
        prev, x0 = self._step(model_output, timestep, sample, eta=eta, generator=generator, **kwargs)
        return SchedulerOutput(prev, x0) if return_dict else (prev, x0)

    def scale_model_input(self, sample, timestep=None):
        return sample

    @property
    def step_index(self):
        return self._step_index

    def steps_taken(self) -> int:
        """How far a stateful sampler is into its schedule (0 for those that look each timestep up afresh)."""
        return self._step_index or 0

    def index_for_timestep(self, timestep, schedule=None) -> int:
        """Position of ``timestep`` in the schedule (the 2nd match if it occurs twice, as diffusers)."""
        schedule = self.timesteps if schedule is None else schedule
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(schedule.device)
        hits = (schedule == timestep).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {timestep} is not one of this scheduler's timesteps")
        return hits[1 if len(hits) > 1 else 0].item()

    def _index(self, timestep) -> int:
        if self._step_index is None:
            self._step_index = self.index_for_timestep(timestep)
        return self._step_index

    def _schedule_indices(self, timesteps: torch.Tensor, device) -> list[int]:
        schedule = self.timesteps.to(device)
        return [self.index_for_timestep(t, schedule) for t in timesteps.to(device).flatten()]

    def add_noise(self, original_samples, noise, timesteps):
        """Forward process q(x_t | x0): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (t = training timesteps)."""
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        abar = abar[timesteps.to(original_samples.device)]
        return _broadcast(abar**0.5, original_samples) * original_samples + \
            _broadcast((1 - abar) ** 0.5, original_samples) * noise

    def _train_sigmas(self) -> np.ndarray:
        """sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0..T-1 (float32, increasing)."""
        return (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()

    def _set_timesteps(self, n, device):  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, model_output, timestep, sample, eta, generator, **kwargs):  # pragma: no cover
        raise NotImplementedError


class SigmaScheduler(Scheduler):
    """Schedulers in k-diffusion form (Euler, Euler ancestral, LMS). They integrate in
    x = x_vp * sqrt(sigma^2 + 1) = x0 + sigma * eps, start from noise of std ``init_noise_sigma``
    and feed the model ``scale_model_input(x) = x / sqrt(sigma^2 + 1)`` (back to VP scale)."""

    is_base_class = True
    _only = {"use_exponential_sigmas": (False, None), "use_beta_sigmas": (False, None)}

    def __init__(self, **config):
        super().__init__(**config)
        self.sigmas = torch.from_numpy(np.concatenate([self._train_sigmas()[::-1], [0.0]]).astype(np.float32))

    @property
    def init_noise_sigma(self):
        top = self.sigmas.max()
        return top if self._cfg["timestep_spacing"] in ("linspace", "trailing") else (top**2 + 1) ** 0.5

    def scale_model_input(self, sample, timestep=None):
        sigma = self.sigmas[self._index(timestep)]
        return sample / (sigma**2 + 1) ** 0.5

    def add_noise(self, original_samples, noise, timesteps):
        """x = x0 + sigma * eps, sigma taken from the inference schedule at ``timesteps``."""
        sigmas = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)
        sigma = sigmas[self._schedule_indices(timesteps, original_samples.device)]
        return original_samples + noise * _broadcast(sigma, original_samples)

    def _set_timesteps(self, n, device):
        c = self._cfg
        timesteps = spaced_timesteps(c["timestep_spacing"], n, c["num_train_timesteps"], c["steps_offset"],
                                     round_linspace=False).astype(np.float32)
        train = self._train_sigmas()
        sigmas = np.interp(timesteps, np.arange(len(train)), train)
        if c.get("use_karras_sigmas"):
            lo = c.get("sigma_min") if c.get("sigma_min") is not None else sigmas[-1].item()
            hi = c.get("sigma_max") if c.get("sigma_max") is not None else sigmas[0].item()
            sigmas = karras_sigmas(lo, hi, n)
            timesteps = sigma_to_t(sigmas, train)
        last = train[0].item() if c.get("final_sigmas_type") == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device)
        self._reset_history()

    def _reset_history(self):
        pass
