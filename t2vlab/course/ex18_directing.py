"""Notebook 18's exercises: the step hook that holds frames to keyframes, and the circular time axis of a loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..schedulers import from_name
from ..techniques.keyframes import KeyframeAnchor
from ..techniques.loops import pad_time_circular
from ..weights import SCHEDULER_CONFIG
from .core import Exercise, ExerciseMistake, call, compare, generator, register


def hold_frames(x, z, eps, frames, abar, strengths):
    """x (B, C, F, h, w): the sample after a step, at noise level abar (a 0-dim tensor in (0, 1]); z, eps
    (B, C, K, h, w): the K keyframes' latents and the noise their frames started from; frames: the K frame
    indices; strengths: K numbers in [0, 1] -> a new tensor: x with frame frames[k] replaced by
    w_k (sqrt(abar) z_k + sqrt(1 - abar) eps_k) + (1 - w_k) x[:, :, frames[k]]."""
    out = x.clone()
    for k, (f, w) in enumerate(zip(frames, strengths)):
        noised = abar.sqrt() * z[:, :, k] + (1 - abar).sqrt() * eps[:, :, k]
        out[:, :, f] = w * noised + (1 - w) * x[:, :, f]
    return out


def check_hold_frames(fn):
    scheduler = from_name("dpm++", SCHEDULER_CONFIG)  # the toy's sampler in notebook 18
    scheduler.set_timesteps(10)
    g = generator(18)
    x = torch.randn(2, 4, 6, 3, 3, generator=g)
    z, eps = torch.randn(2, 4, 2, 3, 3, generator=g), torch.randn(2, 4, 2, 3, 3, generator=g)
    frames, strengths = [0, 3], [1.0, 0.6]
    for i in (2, 9):  # a step in the middle, and the last one (then abar = 1: the clean keyframe)
        abar = 1 / (1 + scheduler.sigmas[i + 1] ** 2)  # DPM-Solver++'s level after step i, as abar
        anchor = KeyframeAnchor(z, frames, eps, scheduler, scheduler.timesteps, strengths)
        want = anchor(i, scheduler.timesteps[i], x, None)
        before = x.clone()
        got = call(fn, x, z, eps, frames, abar, strengths)
        what = f"hold_frames(x, z, eps, frames={frames}, abar={abar.item():.4f}, strengths={strengths})"
        if not torch.equal(x, before):
            raise ExerciseMistake(f"{what} changed x in place: the sampler's own tensor (and, where the result is "
                                  f"checked, the 'before'); work on x.clone()")
        if i == 9:  # at abar = 1 most mistakes coincide with the solution; the middle step told them apart
            compare(got, want, what)
            continue
        wrong = {}
        for name, q in (("with the clean keyframe, not noised to the step's level (sqrt(abar) z + sqrt(1 - abar) "
                         "eps): the UNet would see one clean frame among noisy ones", z),
                        ("with sqrt(abar) and sqrt(1 - abar) swapped: sqrt(abar) weighs the keyframe, the signal "
                         "that is left at this level", (1 - abar).sqrt() * z + abar.sqrt() * eps),
                        ("without the square roots (abar z + (1 - abar) eps): abar is the signal's variance, its "
                         "scale is sqrt(abar)", abar * z + (1 - abar) * eps)):
            m = x.clone()
            for k, (f, w) in enumerate(zip(frames, strengths)):
                m[:, :, f] = w * q[:, :, k] + (1 - w) * x[:, :, f]
            wrong[name] = m
        m = x.clone()
        for k, (f, w) in enumerate(zip(frames, strengths)):
            noised = abar.sqrt() * z[:, :, k] + (1 - abar).sqrt() * eps[:, :, k]
            m[:, :, f] = (1 - w) * noised + w * x[:, :, f]
        wrong["with the strength weighing the sample instead of the keyframe (w q + (1 - w) x)"] = m
        compare(got, want, what, mistakes=wrong)


def circular_time_conv(x, weight, bias):
    """A temporal convolution on a circular time axis: x (B, C, F, H, W), weight (C_out, C, 3, 1, 1), bias (C_out,)
    -> (B, C_out, F, H, W), h[f] = W_0 x[(f - 1) mod F] + W_1 x[f] + W_2 x[(f + 1) mod F] + b."""
    padded = torch.cat([x[:, :, -1:], x, x[:, :, :1]], dim=2)  # frame F-1 before frame 0, frame 0 after F-1
    return F.conv3d(padded, weight, bias)


def check_circular_time_conv(fn):
    g = generator(81)
    x = torch.randn(2, 3, 5, 2, 2, generator=g)
    weight, bias = torch.randn(4, 3, 3, 1, 1, generator=g), torch.randn(4, generator=g)
    want = F.conv3d(pad_time_circular(x, 1), weight, bias)
    compare(call(fn, x, weight, bias), want, "circular_time_conv(x, weight, bias)", mistakes={
        "with zero padding (the plain layer, padding=(1, 0, 0)): frame 0 sees an empty frame -1, frame F-1 an empty "
        "frame F": F.conv3d(x, weight, bias, padding=(1, 0, 0)),
        "padding each end with its own frame (replicate): frame 0's previous frame should be frame F-1":
            F.conv3d(F.pad(x, (0, 0, 0, 0, 1, 1), mode="replicate"), weight, bias),
        "with the circle the wrong way round (frame 0's previous frame is frame 1: a torch.roll the wrong way, or "
        "the kernel flipped)": F.conv3d(pad_time_circular(x, 1), weight.flip(2), bias),
        "without the bias": F.conv3d(pad_time_circular(x, 1), weight),
    })


register(Exercise("18.hold", "the keyframe hook: held frames noised to the step's level", "hold_frames",
                  check_hold_frames, hold_frames,
                  hint="out = x.clone(); for each k: out[:, :, frames[k]] = w (sqrt(abar) z_k + sqrt(1 - abar) eps_k) "
                       "+ (1 - w) x[:, :, frames[k]]"))
register(Exercise("18.circular", "the circular temporal convolution of a loop", "circular_time_conv",
                  check_circular_time_conv, circular_time_conv,
                  hint="concatenate the last frame before the first and the first after the last (dim 2), then a "
                       "conv3d without padding"))
