"""DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022a, 2022b) -- the seed page's 25-step sampler."""

import numpy as np
import torch

from .base import Scheduler, karras_sigmas, sigma_to_t, spaced_timesteps, vp_x0_eps
from .config import BETA_DEFAULTS


class DPMSolverMultistepScheduler(Scheduler):
    """Exponential integrator in lambda = log(alpha / sigma), with x = alpha x0 + sigma eps.
    From s0 to t, h = lambda_t - lambda_s0, keeping the last outputs m0, m1, m2 (newest first):

      dpmsolver++ (m = x0_hat):  x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D0 + ...
      dpmsolver   (m = eps_hat): x_t = (alpha_t / alpha_s0) x - sigma_t (e^h - 1) D0 + ...
    The second is the first with alpha_t -> sigma_t and h -> -h, so both use, with c = alpha_t or sigma_t,
    k = h or -h, E = e^-k - 1:
      order 1: x_t = scale x - c E D0                                              (= DDIM)
      order 2: ... - 0.5 c E D1  (midpoint)   or   ... + c (E / k + 1) D1  (heun)
      order 3: ... + c (E / k + 1) D1 - c ((E + k) / k^2 - 0.5) D2
    with r0 = h0 / h, r1 = h1 / h (previous step sizes), D0 = m0, D1_0 = (m0 - m1) / r0,
    D1_1 = (m1 - m2) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1)
    (order 2 uses D1 = D1_0). Lower orders are used while history builds up, and at the end
    (``lower_order_final`` with < 15 steps, ``euler_at_final``, or a final sigma of zero).
    """

    _defaults = {**BETA_DEFAULTS, "solver_order": 2, "prediction_type": "epsilon", "thresholding": False,
                 "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
                 "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
                 "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                 "use_lu_lambdas": False, "use_flow_sigmas": False, "flow_shift": 1.0,
                 "final_sigmas_type": "zero", "lambda_min_clipped": -float("inf"), "variance_type": None,
                 "timestep_spacing": "linspace", "steps_offset": 0, "rescale_betas_zero_snr": False,
                 "use_dynamic_shifting": False, "time_shift_type": "exponential"}
    _only = {"thresholding": (False,), "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,),
             "use_lu_lambdas": (False,), "use_flow_sigmas": (False,), "lambda_min_clipped": (-float("inf"),),
             "variance_type": (None,), "rescale_betas_zero_snr": (False,), "use_dynamic_shifting": (False,),
             "algorithm_type": ("dpmsolver++", "dpmsolver"), "solver_order": (1, 2, 3)}
    _choices = {**Scheduler._choices, "solver_type": ("midpoint", "heun"),
                "final_sigmas_type": ("zero", "sigma_min")}

    def __init__(self, **config):
        # Configs of DEIS / UniPC name their own solvers; diffusers maps them to these.
        if config.get("algorithm_type") == "deis":
            config["algorithm_type"] = "dpmsolver++"
        if config.get("solver_type") in ("logrho", "bh1", "bh2"):
            config["solver_type"] = "midpoint"
        super().__init__(**config)
        if self._cfg["algorithm_type"] == "dpmsolver" and self._cfg["final_sigmas_type"] == "zero":
            raise ValueError("final_sigmas_type='zero' needs algorithm_type='dpmsolver++'; "
                             "use final_sigmas_type='sigma_min' with algorithm_type='dpmsolver'")
        self.sigmas = torch.from_numpy(self._train_sigmas())
        self.model_outputs, self.lower_order_nums = [], 0

    def _set_timesteps(self, n, device):
        c, T = self._cfg, self._cfg["num_train_timesteps"]
        timesteps = spaced_timesteps(c["timestep_spacing"], n, T, c["steps_offset"], extra=1)
        train = self._train_sigmas()
        if c["use_karras_sigmas"]:
            sigmas = karras_sigmas(train[0].item(), train[-1].item(), n)
            timesteps = sigma_to_t(sigmas, train)
            if c["beta_schedule"] != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            if len(np.unique(timesteps)) < len(timesteps):  # too many steps for so few training steps
                raise ValueError(f"num_inference_steps={n} gives repeated timesteps with num_train_timesteps={T} "
                                 f"and {c['timestep_spacing']!r} spacing; use fewer steps")
            sigmas = train[timesteps.astype(np.int64)]
        last = train[0].item() if c["final_sigmas_type"] == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)
        self.model_outputs, self.lower_order_nums = [None] * c["solver_order"], 0

    def _alpha_sigma(self, i):
        """VP alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha_t for schedule entry i."""
        alpha = 1 / (self.sigmas[i] ** 2 + 1) ** 0.5
        return alpha, self.sigmas[i] * alpha

    def _lambda(self, i):
        alpha, sigma = self._alpha_sigma(i)
        return torch.log(alpha) - torch.log(sigma)

    def _step(self, model_output, timestep, sample, **_):
        c, i, n = self._cfg, self._index(timestep), len(self.timesteps)
        x0, eps = vp_x0_eps(c["prediction_type"], model_output, sample, *self._alpha_sigma(i))
        self.model_outputs = self.model_outputs[1:] + [x0 if c["algorithm_type"] == "dpmsolver++" else eps]
        final = i == n - 1 and (c["euler_at_final"] or (c["lower_order_final"] and n < 15)
                                or c["final_sigmas_type"] == "zero")
        second_last = i == n - 2 and c["lower_order_final"] and n < 15
        if c["solver_order"] == 1 or self.lower_order_nums < 1 or final:
            order = 1
        elif c["solver_order"] == 2 or self.lower_order_nums < 2 or second_last:
            order = 2
        else:
            order = 3
        # diffusers runs the update on a float32 copy of the sample; we do the same for parity
        prev = self._update(sample.to(torch.float32), i, order)
        self.lower_order_nums = min(self.lower_order_nums + 1, c["solver_order"])
        self._step_index += 1
        return prev.to(model_output.dtype), x0

    def _update(self, x, i, order):
        (alpha_t, sigma_t), (alpha_s, sigma_s) = self._alpha_sigma(i + 1), self._alpha_sigma(i)
        lam_s0 = self._lambda(i)
        h = self._lambda(i + 1) - lam_s0
        if self._cfg["algorithm_type"] == "dpmsolver++":
            scale, cc, k = sigma_t / sigma_s, alpha_t, h
        else:
            scale, cc, k = alpha_t / alpha_s, sigma_t, -h
        E = torch.exp(-k) - 1.0
        m = self.model_outputs
        x_t = scale * x - cc * E * m[-1]
        if order == 1:
            return x_t
        lam_s1 = self._lambda(i - 1)
        r0 = (lam_s0 - lam_s1) / h
        D1_0 = 1.0 / r0 * (m[-1] - m[-2])
        if order == 2:
            if self._cfg["solver_type"] == "midpoint":
                return x_t - 0.5 * (cc * E) * D1_0
            return x_t + cc * (E / k + 1.0) * D1_0
        r1 = (lam_s1 - self._lambda(i - 2)) / h
        D1_1 = 1.0 / r1 * (m[-2] - m[-3])
        D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
        D2 = 1.0 / (r0 + r1) * (D1_0 - D1_1)
        return x_t + cc * (E / k + 1.0) * D1 - cc * ((E + k) / k**2 - 0.5) * D2

    def add_noise(self, original_samples, noise, timesteps):
        """x = alpha x0 + sigma eps with alpha, sigma of the inference schedule at ``timesteps``."""
        sigmas = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)
        sigma = sigmas[self._schedule_indices(timesteps, original_samples.device)]
        sigma = sigma.reshape(sigma.shape + (1,) * (original_samples.ndim - 1))
        alpha = 1 / (sigma**2 + 1) ** 0.5
        return alpha * original_samples + sigma * alpha * noise
