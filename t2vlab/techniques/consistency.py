"""Consistency models: from any noise level to a clean sample in one network evaluation.

Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models" (arXiv:2303.01469), Sec. 3: a consistency
function f(x_t, t) maps every point of one probability-flow ODE trajectory to the trajectory's origin,

    f(x_t, t) = f(x_t', t')   for all t, t' on one trajectory          (self-consistency)
    f(x, t_min) = x                                                     (the boundary condition)

and the boundary condition is built into the network by a skip connection,

    f(x, t) = c_skip(t) x + c_out(t) F(x, t),   c_skip(t_min) = 1, c_out(t_min) = 0.

Luo, Tan, Huang, Li & Zhao 2023, "Latent Consistency Models" (arXiv:2310.04378), Sec. 4: in a latent
diffusion model F is the x0 estimate of the noise-predicting UNet, x0_hat = (z_t - sqrt(1 - abar_t) eps_hat) /
sqrt(abar_t), t is the discrete training step (t_min = 0), and with sigma_data s = 0.5 and a scale k on t
(``timestep_scaling``: 10 in LCM's code, 4 for MCM's adapters), u = k t:

    c_skip(t) = s^2 / (u^2 + s^2),      c_out(t) = u / sqrt(u^2 + s^2)

(Song et al.'s c_out has s (t - t_min) in the numerator; LCM's tends to 1, not to s, far from t_min.)
LCM distils the guided teacher, eps_w = eps_uncond + w (eps_cond - eps_uncond), into a student that takes the
guidance scale w as an input (the "augmented" probability-flow ODE of Sec. 4.2): w enters as the sin/cos
embedding below, added to the timestep features through the UNet's ``time_embedding.cond_proj``.
Multistep sampling (LCM's Algorithm 3) is ``t2vlab.schedulers.LCMScheduler``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..checks import integer

SIGMA_DATA = 0.5  # s: the data's standard deviation assumed by the scalings (LCM's code, diffusers)


def boundary_scalings(t, timestep_scaling=10.0, sigma_data=SIGMA_DATA):
    """(c_skip, c_out) at timestep(s) ``t`` (a number or a tensor; a tensor gives tensors):
    u = k t,  c_skip = s^2 / (u^2 + s^2),  c_out = u / sqrt(u^2 + s^2).  At t = 0: (1, 0)."""
    u = t * timestep_scaling
    return sigma_data**2 / (u**2 + sigma_data**2), u / (u**2 + sigma_data**2) ** 0.5


def consistency_output(x0_hat, sample, t, timestep_scaling=10.0):
    """f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat: the consistency function from the network's x0 estimate."""
    c_skip, c_out = boundary_scalings(t, timestep_scaling)
    return c_out * x0_hat + c_skip * sample


def guidance_scale_embedding(w, embedding_dim=512, dtype=torch.float32):
    """Guidance scales (N,) -> (N, embedding_dim): the sinusoidal embedding of 1000 w, sin half first,

        h = embedding_dim // 2,  f_i = 10000^(-i / (h - 1)), i = 0..h-1
        emb = [sin(1000 w f_0), ..., sin(1000 w f_{h-1}), cos(1000 w f_0), ..., cos(1000 w f_{h-1})]

    (a zero column appended when embedding_dim is odd). This is LCM's (diffusers'
    ``LatentConsistencyModelPipeline.get_guidance_scale_embedding``) and T2V-Turbo's (``get_w_embedding``,
    ``guidance_scale_embedding``; embedding_dim 256 for T2V-Turbo-MS): the two are the same formula, sin
    before cos, frequencies over h - 1. It differs from the UNet's timestep embedding (cos first, frequencies
    over h). The arithmetic is theirs too, in float32 and in this order: the angles reach ~10^4 rad, where
    float32 rounding moves sin and cos by up to ~5e-4 (against float64, at w = 15), so any other order
    would give other numbers.
    """
    w = torch.as_tensor(w)
    w = w.reshape(1) if w.ndim == 0 else w
    if w.ndim != 1 or w.is_complex() or w.dtype == torch.bool or not torch.isfinite(w).all():
        raise ValueError(f"w must be a finite number or a 1-d tensor of them (one guidance scale per video), "
                         f"got {tuple(w.shape)} {w.dtype}")
    half = integer("embedding_dim", embedding_dim, low=4) // 2
    w = w * 1000.0
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -step)
    angles = w.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if embedding_dim % 2 else emb


def add_guidance_embedding(unet, embedding_dim=256, seed=0):
    """Give a UNet without one a guidance embedding, in place: ``time_embedding.cond_proj`` (Linear from
    ``embedding_dim`` to the timestep features' width, no bias) and ``time_cond_proj_dim`` in its config, so that it
    takes w as ``timestep_cond``. Returns the UNet.

    T2V-Turbo's UNet is ms-1.7b's with this layer added: their code draws its weight at random (unseeded) and
    ships only a LoRA correction to it (``unet_lora.pt``). Here the weight is drawn as ``nn.Linear`` draws one,
    U(-1/sqrt(embedding_dim), 1/sqrt(embedding_dim)), from a generator seeded with ``seed`` (0 by default), so that
    every run builds the same UNet; it will not be the one any run of theirs drew."""
    if unet.config.time_cond_proj_dim is not None:
        raise ValueError("this UNet has a guidance embedding already "
                         f"(time_cond_proj_dim={unet.config.time_cond_proj_dim})")
    embedding_dim = integer("embedding_dim", embedding_dim, low=1)
    seed = integer("seed", seed, low=0, high=2**63 - 1)
    first = unet.time_embedding.linear_1
    bound = 1 / embedding_dim**0.5  # nn.Linear's kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    weight = torch.rand(first.in_features, embedding_dim, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64) * (2 * bound) - bound
    layer = torch.nn.Linear(embedding_dim, first.in_features, bias=False, device=first.weight.device,
                            dtype=first.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.drawn_from_seed = seed  # marks the layer as ours, for remove_guidance_embedding
    unet.time_embedding.cond_proj = layer
    unet.config = dataclasses.replace(unet.config, time_cond_proj_dim=embedding_dim)  # a config may be shared
    return unet


def remove_guidance_embedding(unet):
    """Undo ``add_guidance_embedding``: the UNet without its ``cond_proj`` again, as before (a guidance embedding
    the checkpoint itself has is refused: it is not ours to remove). Returns the UNet."""
    layer = unet.time_embedding.cond_proj
    if layer is None or not hasattr(layer, "drawn_from_seed"):
        raise ValueError("this UNet has no guidance embedding that add_guidance_embedding gave it")
    unet.time_embedding.cond_proj = None
    unet.config = dataclasses.replace(unet.config, time_cond_proj_dim=None)
    return unet


__all__ = ["SIGMA_DATA", "add_guidance_embedding", "boundary_scalings", "consistency_output",
           "guidance_scale_embedding", "remove_guidance_embedding"]
