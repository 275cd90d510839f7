"""DDIM (Song, Meng & Ermon 2021) -- the checkpoint's own scheduler."""

import numpy as np
import torch

from ..noise import draw_noise
from .base import Scheduler, spaced_timesteps, vp_x0_eps
from .config import BETA_DEFAULTS


class DDIMScheduler(Scheduler):
    """DDIM, eq. 12 of the paper, from t to t' = t - T // n:

        x0_hat, eps_hat  from the model output (epsilon / v / sample prediction)
        s      = eta * sqrt((1 - abar_t') / (1 - abar_t) * (1 - abar_t / abar_t'))
        x_t'   = sqrt(abar_t') * x0_hat + sqrt(1 - abar_t' - s^2) * eps_hat + s * z,   z ~ N(0, I)

    eta = 0 is the deterministic sampler, eta = 1 has DDPM's posterior variance. After the last
    step abar_t' is 1 if ``set_alpha_to_one`` else abar_0.
    """

    stateless = True  # each step looks its timestep up afresh
    _defaults = {**BETA_DEFAULTS, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0,
                 "prediction_type": "epsilon", "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                 "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading",
                 "rescale_betas_zero_snr": False}
    _only = {"thresholding": (False,), "rescale_betas_zero_snr": (False,)}

    def __init__(self, **config):
        super().__init__(**config)
        self.final_alpha_cumprod = torch.tensor(1.0) if self._cfg["set_alpha_to_one"] else self.alphas_cumprod[0]

    def _set_timesteps(self, n, device):
        c = self._cfg
        t = spaced_timesteps(c["timestep_spacing"], n, c["num_train_timesteps"], c["steps_offset"])
        self.timesteps = torch.from_numpy(t.astype(np.int64)).to(device)

    def _step(self, model_output, timestep, sample, eta=0.0, generator=None, **_):
        c = self._cfg
        prev_t = timestep - c["num_train_timesteps"] // self.num_inference_steps
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        x0, eps = vp_x0_eps(c["prediction_type"], model_output, sample, a_t**0.5, (1 - a_t) ** 0.5)
        if c["clip_sample"]:
            x0 = x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        s = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        prev = a_prev**0.5 * x0 + (1 - a_prev - s**2) ** 0.5 * eps
        if eta > 0:
            prev = prev + s * draw_noise(model_output.shape, generator, model_output.device, model_output.dtype)
        return prev, x0
