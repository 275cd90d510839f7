"""PNDM: pseudo numerical methods for diffusion models (Liu et al. 2022) -- PRK warm-up, then PLMS."""

import numpy as np
import torch

from .base import Scheduler, spaced_timesteps, vp_x0_eps
from .config import BETA_DEFAULTS


class PNDMScheduler(Scheduler):
    """Linear multistep on eps with the DDIM-like transfer of eq. 9 (t -> t' with eps_hat):

        x_t' = sqrt(abar_t' / abar_t) x_t
               - (abar_t' - abar_t) eps_hat / (abar_t sqrt(1 - abar_t') + sqrt(abar_t (1 - abar_t) abar_t'))

    PLMS eps_hat from the last outputs e0 (newest) .. e3:  e0;  (3 e0 - e1) / 2;  (23 e0 - 16 e1 + 5 e2) / 12;
    (55 e0 - 59 e1 + 37 e2 - 9 e3) / 24. Warm-up, unless ``skip_prk_steps``: 3 RK4 steps (4 model calls each,
    at t, t - h/2, t - h/2, t - h; eps_hat = (k1 + 2 k2 + 2 k3 + k4) / 6). With ``skip_prk_steps`` the
    second call re-evaluates at the first step's end and averages (a Heun step).
    As in diffusers, v / sample outputs are combined first, then converted to eps at the current (x_t, t).
    """

    _defaults = {**BETA_DEFAULTS, "skip_prk_steps": False, "set_alpha_to_one": False,
                 "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0}

    def __init__(self, **config):
        super().__init__(**config)
        self.final_alpha_cumprod = torch.tensor(1.0) if self._cfg["set_alpha_to_one"] else self.alphas_cumprod[0]

    def _set_timesteps(self, n, device):
        c = self._cfg
        if not c["skip_prk_steps"] and n < 4:
            raise ValueError(f"num_inference_steps must be >= 4 for PNDM with Runge-Kutta warm-up, got {n}; "
                             "set skip_prk_steps=True for fewer steps")
        desc = spaced_timesteps(c["timestep_spacing"], n, c["num_train_timesteps"], c["steps_offset"])
        desc = desc.astype(np.int64)
        if c["skip_prk_steps"]:
            self.prk_timesteps = np.array([], dtype=np.int64)
            plms = np.concatenate([desc[:1], desc[1:2], desc[1:]])
        else:
            half = c["num_train_timesteps"] // n // 2
            self.prk_timesteps = np.array([[desc[k], desc[k + 1] + half, desc[k + 1] + half, desc[k + 1]]
                                           for k in range(3)]).reshape(-1)
            plms = desc[3:]
        self.timesteps = torch.from_numpy(np.concatenate([self.prk_timesteps, plms])).to(device)
        self.ets, self.counter, self._rk_sum, self._cur_sample = [], 0, 0, None

    def _transfer(self, sample, t, t_prev, model_output):
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
        _, eps = vp_x0_eps(self._cfg["prediction_type"], model_output, sample, a_t**0.5, (1 - a_t) ** 0.5)
        denom = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5
        return (a_prev / a_t) ** 0.5 * sample - (a_prev - a_t) * eps / denom

    def steps_taken(self) -> int:
        return self.counter

    def _step(self, model_output, timestep, sample, **_):
        a_t = self.alphas_cumprod[timestep]
        x0, _ = vp_x0_eps(self._cfg["prediction_type"], model_output, sample, a_t**0.5, (1 - a_t) ** 0.5)
        if self.counter < len(self.prk_timesteps):
            prev = self._step_prk(model_output, timestep, sample)
        else:
            prev = self._step_plms(model_output, timestep, sample)
        self.counter += 1
        return prev, x0

    def _step_prk(self, e, timestep, sample):
        j = self.counter % 4  # which of the 4 RK4 evaluations
        t_start = self.prk_timesteps[self.counter - j]
        t_prev = timestep - (0 if j % 2 else self._cfg["num_train_timesteps"] // self.num_inference_steps // 2)
        if j == 0:
            self._rk_sum, self._cur_sample = 1 / 6 * e, sample
            self.ets.append(e)
        elif j < 3:
            self._rk_sum = self._rk_sum + 1 / 3 * e
        else:
            e, self._rk_sum = self._rk_sum + 1 / 6 * e, 0
        return self._transfer(self._cur_sample, t_start, t_prev, e)

    def _step_plms(self, e, timestep, sample):
        step = self._cfg["num_train_timesteps"] // self.num_inference_steps
        t, t_prev = timestep, timestep - step
        if self.counter == 1 and self._cfg["skip_prk_steps"]:  # Heun correction of the first step
            t, t_prev = timestep + step, timestep
            e, sample, self._cur_sample = (e + self.ets[-1]) / 2, self._cur_sample, None
        else:
            self.ets = self.ets[-3:] + [e]
            if self.counter == 0:
                self._cur_sample = sample
            ets = self.ets[::-1]
            if len(ets) == 2:
                e = (3 * ets[0] - ets[1]) / 2
            elif len(ets) == 3:
                e = (23 * ets[0] - 16 * ets[1] + 5 * ets[2]) / 12
            elif len(ets) == 4:
                e = 1 / 24 * (55 * ets[0] - 59 * ets[1] + 37 * ets[2] - 9 * ets[3])
        return self._transfer(sample, t, t_prev, e)
