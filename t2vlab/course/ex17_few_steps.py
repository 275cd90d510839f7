"""Notebook 17's exercises: the consistency function's boundary scalings, the teacher's guided DDIM step (the ODE
solver of consistency distillation) and the consistency function itself."""

from __future__ import annotations

import torch

from ..distill import ddim_solver_step
from ..techniques.consistency import boundary_scalings as package_scalings
from ..techniques.consistency import consistency_output
from .core import Exercise, ExerciseMistake, call, compare, generator, register


def boundary_scalings(t, timestep_scaling=10.0, sigma_data=0.5):
    """(c_skip, c_out) at timesteps t (N,): u = k t, c_skip = s^2 / (u^2 + s^2), c_out = u / sqrt(u^2 + s^2)."""
    u = timestep_scaling * t
    c_skip = sigma_data**2 / (u**2 + sigma_data**2)
    c_out = u / (u**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def check_boundary_scalings(fn):
    t = torch.tensor([0.0, 0.01, 0.05, 0.2, 1.0, 19.0, 999.0])  # fractions of a step too, where c_skip falls
    got = call(fn, t.clone(), 4.0, 0.5)
    if got is None or not isinstance(got, (tuple, list)) or len(got) != 2:
        compare(got if got is None else torch.as_tensor(0.0), torch.zeros(2, len(t)), "boundary_scalings(t)")
        raise ExerciseMistake(f"boundary_scalings(t) should return a pair (c_skip, c_out), got {type(got).__name__}")
    u = 4.0 * t
    compare(torch.stack([torch.as_tensor(g, dtype=torch.float32) for g in got]), torch.stack(package_scalings(t, 4.0)),
            "(c_skip, c_out)", mistakes={
                "without the timestep scaling k (u = t instead of u = k t)": torch.stack(package_scalings(t, 1.0)),
                "with c_skip and c_out swapped": torch.stack(package_scalings(t, 4.0)[::-1]),
                "with Song et al.'s c_out = s u / sqrt(u^2 + s^2) (LCM's has no s in the numerator)":
                    torch.stack([0.25 / (u**2 + 0.25), 0.5 * u / (u**2 + 0.25) ** 0.5]),
                "with sigma_data where sigma_data^2 belongs":
                    torch.stack([0.5 / (u**2 + 0.5), u / (u**2 + 0.5) ** 0.5]),
            })


def teacher_step(x, eps_uncond, eps_cond, w, abar_start, abar_end):
    """The teacher's guided DDIM step from t_{n+k} to t_n: x, eps_uncond, eps_cond (B, C, F, h, w); w a number;
    abar_start, abar_end (B, 1, 1, 1, 1), alpha-bar at t_{n+k} and t_n. Returns x_hat at t_n (B, C, F, h, w)."""
    eps = eps_uncond + w * (eps_cond - eps_uncond)  # classifier-free guidance
    x0 = (x - (1 - abar_start).sqrt() * eps) / abar_start.sqrt()  # the clean video this eps points to
    return abar_end.sqrt() * x0 + (1 - abar_end).sqrt() * eps  # the same x0 and eps at the lower noise level


def check_teacher_step(fn):
    g = generator(17)
    x, eps_u, eps_c = (torch.randn(3, 4, 2, 4, 4, generator=g) for _ in range(3))
    abar_s = torch.tensor([0.05, 0.3, 0.9]).reshape(-1, 1, 1, 1, 1)  # three noise levels
    abar_e = torch.tensor([0.08, 0.35, 0.95]).reshape(-1, 1, 1, 1, 1)
    w = 7.5
    eps = eps_u + w * (eps_c - eps_u)
    x0 = (x - (1 - abar_s).sqrt() * eps) / abar_s.sqrt()
    lcm_form = eps_c + w * (eps_c - eps_u)
    compare(call(fn, x, eps_u, eps_c, w, abar_s, abar_e), ddim_solver_step(x, eps, abar_s, abar_e), "x_hat",
            mistakes={
                "with LCM's guidance form eps_c + w (eps_c - eps_u) (that is guidance w + 1 in the pipeline's form)":
                    ddim_solver_step(x, lcm_form, abar_s, abar_e),
                "without guidance (the conditional eps alone)": ddim_solver_step(x, eps_c, abar_s, abar_e),
                "stopping at x0 (the step must go to t_n, not to the clean video)": x0,
                "with alpha-bar where its square root belongs":
                    abar_e * (x - (1 - abar_s) * eps) / abar_s + (1 - abar_e) * eps,
                "with the noise levels swapped (a step up, from t_n to t_{n+k})":
                    ddim_solver_step(x, eps, abar_e, abar_s),
            })


def consistency_function(x, eps, t, abar, timestep_scaling=10.0):
    """f(x, t) = c_skip(t) x + c_out(t) x0, x0 = (x - sqrt(1 - abar) eps) / sqrt(abar): x, eps (B, C, F, h, w);
    t (B,) timesteps; abar (B, 1, 1, 1, 1). Returns f (B, C, F, h, w)."""
    c_skip, c_out = boundary_scalings(t.float().reshape(-1, 1, 1, 1, 1), timestep_scaling)  # yours, from above
    x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
    return c_skip * x + c_out * x0


def check_consistency_function(fn):
    g = generator(3)
    x, eps = (torch.randn(4, 4, 2, 4, 4, generator=g) for _ in range(2))
    t = torch.tensor([0, 1, 19, 999])  # t = 0: f must give x back exactly (the boundary condition)
    abar = torch.tensor([0.9991, 0.998, 0.97, 0.0047]).reshape(-1, 1, 1, 1, 1)
    x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
    col = t.float().reshape(-1, 1, 1, 1, 1)
    want = consistency_output(x0, x, col, 10.0)
    c_skip, c_out = package_scalings(col, 10.0)
    compare(call(fn, x, eps, t, abar, 10.0), want, "f(x, t)", mistakes={
        "with c_skip and c_out swapped (c_skip multiplies x, c_out the network's x0)": c_out * x + c_skip * x0,
        "with the x0 estimate alone (no skip connection: f(x, 0) is not x)": x0,
        "with eps where the x0 estimate belongs": c_skip * x + c_out * eps,
    })


register(Exercise("17.boundary_scalings", "the boundary condition's scalings c_skip, c_out", "boundary_scalings",
                  check_boundary_scalings, boundary_scalings,
                  hint="u = timestep_scaling * t; c_skip = s^2 / (u^2 + s^2); c_out = u / sqrt(u^2 + s^2)"))
register(Exercise("17.teacher_step", "the teacher's guided DDIM step, the distillation's ODE solver", "teacher_step",
                  check_teacher_step, teacher_step,
                  hint="guide eps (eps_u + w (eps_c - eps_u)); x0 from x and eps at abar_start; then "
                       "sqrt(abar_end) x0 + sqrt(1 - abar_end) eps"))
register(Exercise("17.consistency_function", "the consistency function f(x, t)", "consistency_function",
                  check_consistency_function, consistency_function,
                  hint="x0 = (x - sqrt(1 - abar) eps) / sqrt(abar); f = c_skip(t) x + c_out(t) x0, the scalings "
                       "broadcast as (B, 1, 1, 1, 1)"))
