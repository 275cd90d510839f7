"""Linear multistep (Adams-Bashforth in sigma) sampler, k-diffusion's ``sample_lms``."""

import math

import numpy as np

from .base import SigmaScheduler, ve_x0
from .config import BETA_DEFAULTS


class LMSDiscreteScheduler(SigmaScheduler):
    """Fit a polynomial through the last k <= ``order`` (4) derivatives d_j = (x_j - x0_hat_j) / sigma_j and
    integrate it exactly over [sigma_i, sigma_{i+1}]:

        x_{i+1} = x_i + sum_{j<k} c_j d_{i-j},
        c_j     = integral_{sigma_i}^{sigma_{i+1}} prod_{m<k, m!=j} (s - sigma_{i-m}) / (sigma_{i-j} - sigma_{i-m}) ds
    """

    _defaults = {**BETA_DEFAULTS, "use_karras_sigmas": False, "use_exponential_sigmas": False,
                 "use_beta_sigmas": False, "prediction_type": "epsilon", "timestep_spacing": "linspace",
                 "steps_offset": 0}

    def _reset_history(self):
        self.derivatives = []

    def lms_coefficient(self, k: int, i: int, j: int) -> float:
        """c_j above: the Lagrange basis polynomial of node sigma_{i-j}, integrated exactly."""
        nodes = [self.sigmas[i - m].item() for m in range(k)]
        others = [s for m, s in enumerate(nodes) if m != j]
        basis = np.poly1d(others, r=True) / math.prod(nodes[j] - s for s in others)
        antiderivative = basis.integ()
        return float(antiderivative(self.sigmas[i + 1].item()) - antiderivative(self.sigmas[i].item()))

    def _step(self, model_output, timestep, sample, order: int = 4, **_):
        i = self._index(timestep)
        sigma = self.sigmas[i]
        x0 = ve_x0(self._cfg["prediction_type"], model_output, sample, sigma)
        self.derivatives = (self.derivatives + [(sample - x0) / sigma])[-order:]
        k = min(i + 1, order)
        coeffs = [self.lms_coefficient(k, i, j) for j in range(k)]
        prev = sample + sum(c * d for c, d in zip(coeffs, reversed(self.derivatives)))
        self._step_index += 1
        return prev, x0
