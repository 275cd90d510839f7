"""LCM multistep sampling (Luo et al. 2023, Algorithm 3) -- for consistency-distilled checkpoints."""

import numpy as np
import torch

from ..checks import integer, number, positive_int
from ..noise import draw_noise
from ..techniques.consistency import consistency_output
from .base import Scheduler, SchedulerOutput, vp_x0_eps
from .config import BETA_DEFAULTS

TIMESTEP_SELECTIONS = ("even", "stride", "even_upper")


class LCMSchedulerOutput(SchedulerOutput):
    """``prev_sample`` and ``pred_original_sample`` = f(x_t, t), also under diffusers' name ``denoised``."""

    @property
    def denoised(self):
        return self.pred_original_sample


class LCMScheduler(Scheduler):
    """Each step evaluates the consistency function, then noises its answer again to the next timestep t':

        x0_hat      from the model output (epsilon / v / sample prediction), clipped if ``clip_sample``
        f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat                    (techniques/consistency.py)
        x_t'      = sqrt(abar_t') f + sqrt(1 - abar_t') z,  z ~ N(0, I);   the last step returns f itself

    The timesteps are picked from the N = ``original_inference_steps`` points the model was distilled on,
    t_j = j (T // N) - 1 for j = 1..N (j = 1..int(N strength) with ``strength`` < 1), from the top down;
    ``timestep_selection`` says which n of them n steps take:
        "even"   (diffusers' LCMScheduler):   the floor(i N / n)-th, i = 0..n-1        4 of 50: 999 759 499 259
        "stride" (T2V-Turbo's scheduler):     every (N // n)-th, the first n             4 of 50: 999 759 519 279
        "even_upper" (t2vlab distill's):      "even" over n + 1, the lowest left out     4 of 50: 999 799 599 399
                                              (the floor(i N / (n + 1))-th; all N when n = N)
    or ``set_timesteps(timesteps=[...])`` gives them (descending, in [0, T)). Of diffusers' config,
    ``set_alpha_to_one``, ``steps_offset`` and ``timestep_spacing`` change nothing here, nor in diffusers
    (which reads the first only after a negative timestep; those are refused here).
    """

    _defaults = {**BETA_DEFAULTS, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "original_inference_steps": 50, "clip_sample": False, "clip_sample_range": 1.0,
                 "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": False,
                 "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading",
                 "timestep_scaling": 10.0, "rescale_betas_zero_snr": False,
                 "timestep_selection": "even"}  # the last key is ours (diffusers ignores it, with a warning)
    _only = {"thresholding": (False,), "rescale_betas_zero_snr": (False,)}
    _choices = {**Scheduler._choices, "timestep_selection": TIMESTEP_SELECTIONS}

    def __init__(self, **config):
        super().__init__(**config)
        T = self._cfg["num_train_timesteps"]
        positive_int("original_inference_steps", self._cfg["original_inference_steps"], high=T,
                     hint=" (at most num_train_timesteps)")
        number("timestep_scaling", self._cfg["timestep_scaling"], low=0, low_open=True)

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None,
                      timesteps=None, strength=1.0):
        """n = ``num_inference_steps`` timesteps picked from the distillation's schedule, or ``timesteps``
        themselves; ``strength`` < 1 starts part-way (video-to-video). See the class docstring."""
        origin = self._origin_timesteps(original_inference_steps, strength)
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass num_inference_steps or timesteps, not both")
            t = self._custom_timesteps(timesteps)
            t = t[len(t) - min(int(len(t) * strength), len(t)):]  # strength keeps the lowest int(n strength)
        else:
            n = self._check_steps(num_inference_steps, len(origin))
            top_down = origin[::-1]
            selection = self._cfg["timestep_selection"]
            if selection in ("even", "even_upper"):  # floor(i N / parts), i = 0..n-1 (diffusers' linspace for "even")
                parts = n if selection == "even" else min(n + 1, len(origin))
                t = top_down[np.floor(np.linspace(0, len(origin), parts, endpoint=False)[:n]).astype(np.int64)]
            else:
                t = top_down[::len(origin) // n][:n]
        if len(t) == 0:
            raise ValueError(f"strength={strength} leaves none of the timesteps {list(timesteps)}; raise it")
        self.timesteps = torch.from_numpy(np.array(t, dtype=np.int64)).to(device)  # a copy: no negative strides
        self.num_inference_steps = len(self.timesteps)
        self._step_index = None

    def _step(self, model_output, timestep, sample, generator=None, **_):
        c, i = self._cfg, self._index(timestep)
        t = self.timesteps[i].cpu()
        a_t = self.alphas_cumprod[t]
        x0, _ = vp_x0_eps(c["prediction_type"], model_output, sample, a_t**0.5, (1 - a_t) ** 0.5)
        if c["clip_sample"]:
            x0 = x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        f = consistency_output(x0, sample, t, c["timestep_scaling"])
        self._step_index += 1
        if i == len(self.timesteps) - 1:  # the last step adds no noise: one step is one model call to a sample
            return f, f
        a_next = self.alphas_cumprod[self.timesteps[i + 1].cpu()]
        z = draw_noise(model_output.shape, generator, model_output.device, f.dtype)
        return a_next**0.5 * f + (1 - a_next) ** 0.5 * z, f

    def step(self, model_output, timestep, sample, eta=0.0, generator=None, return_dict=True, **kwargs):
        prev, f = super().step(model_output, timestep, sample, eta, generator, return_dict=False, **kwargs)
        return LCMSchedulerOutput(prev, f) if return_dict else (prev, f)

    # ---- checks and the distillation schedule -------------------------------------------------------
    def _origin_timesteps(self, original_inference_steps, strength) -> np.ndarray:
        """t_j = j (T // N) - 1, j = 1..int(N strength): the timesteps the model was distilled on."""
        T = self._cfg["num_train_timesteps"]
        N = self._cfg["original_inference_steps"] if original_inference_steps is None else original_inference_steps
        N = positive_int("original_inference_steps", N, high=T, hint=" (at most num_train_timesteps)")
        strength = number("strength", strength, low=0, high=1, low_open=True)
        return np.arange(1, int(N * strength) + 1, dtype=np.int64) * (T // N) - 1

    def _check_steps(self, n, available) -> int:
        T = self._cfg["num_train_timesteps"]
        n = positive_int("num_inference_steps", n, high=T, hint=" (at most num_train_timesteps)")
        if n > available:
            raise ValueError(f"num_inference_steps={n} is more than the {available} timesteps this model was "
                             "distilled on (original_inference_steps x strength); use fewer steps")
        return n

    def _custom_timesteps(self, timesteps) -> np.ndarray:
        T = self._cfg["num_train_timesteps"]
        t = [integer("timesteps", v, low=0, high=T - 1, hint=f" for each entry (0..{T - 1})")
             for v in _as_list(timesteps)]
        if not t or any(b >= a for a, b in zip(t, t[1:])):
            raise ValueError(f"timesteps must be a non-empty, strictly descending list, got {list(timesteps)}")
        return np.array(t, dtype=np.int64)


def _as_list(v):
    """A list, tuple, 1-d array or tensor of timesteps as a Python list (anything else refused by name)."""
    if isinstance(v, torch.Tensor) or isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise ValueError(f"timesteps must be 1-d, got shape {tuple(v.shape)}")
        return v.tolist()
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"timesteps must be a list of integers, got {type(v).__name__}")
    return list(v)

