"""Notebook 03's exercises: the VAE's KL term and its reparameterised sample."""

from __future__ import annotations

import torch

from ..vae import DiagonalGaussian
from .core import Exercise, ExerciseMistake, call, compare, generator, register


def _moments(seed):
    """Encoder outputs (B, 2C, h, w): a mean and a log-variance per latent number, of the sizes a trained VAE
    gives (means of a few units, log-variances from about -9 to 0)."""
    g = generator(seed)
    mean = 3 * torch.randn(3, 4, 6, 6, generator=g)
    logvar = -9 * torch.rand(3, 4, 6, 6, generator=g)
    return torch.cat([mean, logvar], 1), mean, logvar


# ------------------------------------------------------------------------------- 03.kl: KL(q || N(0, I))
def kl_divergence(mean, logvar):
    """KL( N(mean, exp(logvar)) || N(0, I) ) per sample, summed over the latent's numbers:
    mean, logvar (B, C, h, w) -> (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def check_kl(fn):
    moments, mean, logvar = _moments(5)
    var = logvar.exp()
    per_number = lambda v, lv: 0.5 * (mean.pow(2) + v - 1 - lv)  # noqa: E731
    # sums of 144 float32 terms of a few units: rounding ~1e-5 relative, well inside rtol 1e-4
    compare(call(fn, mean, logvar), DiagonalGaussian(moments).kl(), "kl_divergence(mean, logvar)", mistakes={
        "with the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
            per_number((0.5 * logvar).exp(), logvar).sum((1, 2, 3)),
        "with + logvar where - logvar belongs": per_number(var, -logvar).sum((1, 2, 3)),
        "averaging over the latent's numbers instead of summing": per_number(var, logvar).mean((1, 2, 3)),
        "summing over the batch as well (one number, not one per sample)": per_number(var, logvar).sum(),
        "without the -1 (the KL of N(0, I) to itself must be 0)": 0.5 * (mean.pow(2) + var - logvar).sum((1, 2, 3)),
    })


register(Exercise("03.kl", "the VAE's KL term", "kl_divergence", check_kl, kl_divergence,
                  hint="0.5 * (mean^2 + var - 1 - logvar), var = exp(logvar), summed over (C, h, w): "
                       "one value per sample"))


# -------------------------------------------------------------------- 03.sample: the reparameterisation
def reparameterised_sample(mean, logvar, noise):
    """A draw from N(mean, exp(logvar)) written so that gradients reach mean and logvar:
    mean + std * noise with std = exp(logvar / 2); all three (B, C, h, w) -> (B, C, h, w)."""
    return mean + (0.5 * logvar).exp() * noise


def check_sample(fn):
    moments, mean, logvar = _moments(6)
    want = DiagonalGaussian(moments).sample(generator(7))          # the package draws its noise from the generator
    noise = torch.randn(mean.shape, generator=generator(7))        # ... the same noise, handed to the learner
    # float32: exp and one multiply-add, rounding ~1e-7 relative; compare's default tolerances
    compare(call(fn, mean, logvar, noise), want, "reparameterised_sample(mean, logvar, noise)", mistakes={
        "with the variance exp(logvar) as the scale of the noise (the standard deviation is exp(logvar / 2))":
            mean + logvar.exp() * noise,
        "with logvar itself as the scale of the noise": mean + logvar * noise,
        "without the mean": (0.5 * logvar).exp() * noise,
        "returning the mean (the mode), no noise": mean,
    })
    mean.requires_grad_(True)
    logvar.requires_grad_(True)
    out = call(fn, mean, logvar, noise)
    compare(out.detach(), want, "reparameterised_sample with gradients on")
    if not out.requires_grad:
        raise ExerciseMistake("reparameterised_sample's result has no gradient: mean and logvar must enter the "
                              "result through differentiable operations (no .detach(), no torch.no_grad, no numpy)")


register(Exercise("03.sample", "the reparameterised sample", "reparameterised_sample", check_sample,
                  reparameterised_sample, hint="mean + exp(0.5 * logvar) * noise"))
