"""Typical mistakes of each exercise of the course (t2vlab.course): learners' wrong functions, each with what
the check must say about it (a regular expression). tests/test_course.py runs every one; each exercise needs at
least two. One section per notebook, in notebook order."""

from __future__ import annotations

import math

MISTAKES = {}  # key -> [(a learner's wrong function, what the check must say)]


# ---------------------------------------------------------------------------------- 04: attention
def attention_no_scale(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def attention_softmax_over_queries(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v


MISTAKES["04.attention"] = [(attention_no_scale, "without the 1/sqrt\\(d\\) scale"),
                            (attention_softmax_over_queries, "softmax over the queries")]


# ---------------------------------------------------------------------------------- 08: VideoFusion's noise
def decomposed_noise_without_roots(shape, generator, r):
    import torch

    residual = torch.randn(shape, generator=generator)
    base = torch.randn((shape[0], shape[1], 1, *shape[3:]), generator=generator)
    return r * base + (1 - r) * residual


def decomposed_noise_base_first(shape, generator, r):
    import torch

    base = torch.randn((shape[0], shape[1], 1, *shape[3:]), generator=generator)
    residual = torch.randn(shape, generator=generator)
    return r ** 0.5 * base + (1 - r) ** 0.5 * residual


def decomposed_noise_independent(shape, generator, r):  # forgets the shared base: every frame on its own
    import torch

    return torch.randn(shape, generator=generator)


MISTAKES["08.decomposed_noise"] = [(decomposed_noise_without_roots, "without the square roots"),
                                   (decomposed_noise_base_first, "base drawn before the residuals"),
                                   (decomposed_noise_independent, "differs from the package's")]


def correlation_as_covariance(noise):
    import torch

    return torch.cov(noise.movedim(2, 0).reshape(noise.shape[2], -1))


def correlation_without_moving_the_frames(noise):
    import torch

    return torch.corrcoef(noise.reshape(noise.shape[2], -1))


def correlation_over_channels(noise):
    import torch

    return torch.corrcoef(noise.movedim(1, 0).reshape(noise.shape[1], -1))


MISTAKES["08.correlation"] = [(correlation_as_covariance, "covariance instead of the correlation"),
                              (correlation_without_moving_the_frames, "without moving the frame axis"),
                              (correlation_over_channels, r"shape \(2, 2\), expected \(5, 5\)")]


# ---------------------------------------------------------------------------------- 10: training
def drop_where_above(caption_ids, empty, u, p):
    import torch

    return torch.where(u > p, empty, caption_ids)


def drop_to_row_zero(caption_ids, empty, u, p):
    import torch

    return torch.where(u < p, 0, caption_ids)


MISTAKES["10.caption_dropout"] = [(drop_where_above, "dropping where u > p"),
                                  (drop_to_row_zero, "row 0")]


def loss_against_x0(unet, text_encoder, alphas_cumprod, x0, ids, noise, t):
    abar = alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((unet(x_t, t, text_encoder(ids)) - x0) ** 2).mean()


def loss_without_roots(unet, text_encoder, alphas_cumprod, x0, ids, noise, t):
    abar = alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    return ((unet(abar * x0 + (1 - abar) * noise, t, text_encoder(ids)) - noise) ** 2).mean()


def loss_summed(unet, text_encoder, alphas_cumprod, x0, ids, noise, t):
    abar = alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((unet(x_t, t, text_encoder(ids)) - noise) ** 2).sum()


MISTAKES["10.loss"] = [(loss_against_x0, "instead of the noise"), (loss_without_roots, "without the square roots"),
                       (loss_summed, "times 3072")]


# ---------------------------------------------------------------------------------- 11: SDEdit
def sdedit_head(timesteps, strength):
    return timesteps[:int(len(timesteps) * strength)]


def sdedit_skips_strength(timesteps, strength):
    return timesteps[int(len(timesteps) * strength):]


MISTAKES["11.timesteps"] = [(sdedit_head, "first int\\(N s\\) timesteps"),
                            (sdedit_skips_strength, "not how many are skipped")]


def noise_to_without_roots(z0, noise, t, alphas_cumprod):
    return alphas_cumprod[t] * z0 + (1 - alphas_cumprod[t]) * noise


def noise_to_swapped(z0, noise, t, alphas_cumprod):
    abar = alphas_cumprod[t]
    return abar.sqrt() * noise + (1 - abar).sqrt() * z0


MISTAKES["11.noise_to"] = [(noise_to_without_roots, "without the square roots"),
                           (noise_to_swapped, "z0 and the noise swapped")]


# ---------------------------------------------------------------------------------- 12: FreeNoise
def spans_without_the_last(num_frames, context_length, context_stride):
    length = min(context_length, num_frames)
    return [(s, s + length) for s in range(0, num_frames - length + 1, context_stride)]


def spans_past_the_end(num_frames, context_length, context_stride):
    return [(s, s + context_length) for s in range(0, num_frames, context_stride)]


MISTAKES["12.windows"] = [(spans_without_the_last, "misses the window ending at the last frame"),
                          (spans_past_the_end, "past the last frame")]


def weights_from_zero(length):
    import torch

    i = torch.arange(length, dtype=torch.float32)
    return torch.minimum(i, length - 1 - i)


def weights_ramp(length):
    return [float(i + 1) for i in range(length)]


MISTAKES["12.weights"] = [(weights_from_zero, "counting from 0"), (weights_ramp, "a ramp up to the end")]


def fuse_without_dividing(outputs, spans, weights, num_frames):
    import torch

    total = torch.zeros(outputs[0].shape[0], num_frames, outputs[0].shape[2])
    for out, (a, b) in zip(outputs, spans):
        total[:, a:b] += out * weights[:, None]
    return total


def fuse_unweighted(outputs, spans, weights, num_frames):
    import torch

    total, count = torch.zeros(outputs[0].shape[0], num_frames, outputs[0].shape[2]), torch.zeros(num_frames)
    for out, (a, b) in zip(outputs, spans):
        total[:, a:b] += out
        count[a:b] += 1
    return total / count[:, None]


MISTAKES["12.fuse"] = [(fuse_without_dividing, "without dividing by the sum of the weights"),
                       (fuse_unweighted, "every window weighing the same")]


# ---------------------------------------------------------------------------------- 14: LoRA
def lora_forward_unscaled(x, weight, bias, A, B, scaling):
    return x @ weight.T + bias + (x @ A.T) @ B.T


def lora_forward_without_bias(x, weight, bias, A, B, scaling):
    return x @ weight.T + scaling * (x @ A.T) @ B.T


MISTAKES["14.forward"] = [(lora_forward_unscaled, "without the scaling alpha / r"),
                          (lora_forward_without_bias, "without the bias")]


def merge_subtracting(weight, A, B, scaling):
    return weight - scaling * B @ A


def merge_transposed(weight, A, B, scaling):
    return weight.T + scaling * A.T @ B.T


MISTAKES["14.merge"] = [(merge_subtracting, "subtracting the correction"),
                        (merge_transposed, "same sizes in another order")]


# ---------------------------------------------------------------------------------- 15: DeepCache's premise
def changes_absolute(features):
    import torch

    return torch.stack([(b - a).norm() for a, b in zip(features, features[1:])])


def changes_over_the_previous(features):
    import torch

    return torch.stack([(b - a).norm() / a.norm() for a, b in zip(features, features[1:])])


MISTAKES["15.changes"] = [(changes_absolute, "without dividing by the feature's own size"),
                          (changes_over_the_previous, "previous step's feature")]


# ---------------------------------------------------------------------------------- 16: the capstone
def make_big_in_place(labels):
    labels["radius"] = 18 + (labels["radius"] - 8) / 3 * 2
    labels["across"] = 29 + (labels["across"] - 18) / 28 * 6
    return labels


def make_big_scaled(labels):
    return {**labels, "radius": labels["radius"] * 18 / 8, "across": 29 + (labels["across"] - 18) / 28 * 6}


def make_big_at_the_edge(labels):
    return {**labels, "radius": 18 + (labels["radius"] - 8) / 3 * 2}


MISTAKES["16.big"] = [(make_big_in_place, "changed them in place"), (make_big_scaled, "radius scaled"),
                      (make_big_at_the_edge, "left as it was")]


def extent_along(video):
    import torch

    from t2vlab.toy.evaluate import foreground

    mask, _ = foreground(video)
    return float(torch.tensor([max(int(m.any(1).sum()), int(m.any(0).sum())) for m in mask if m.any()],
                              dtype=torch.float32).median())


def extent_as_area(video):
    import torch

    from t2vlab.toy.evaluate import foreground

    mask, _ = foreground(video)
    return float(torch.tensor([int(m.sum()) for m in mask if m.any()], dtype=torch.float32).median())


MISTAKES["16.extent"] = [(extent_along, "the larger of the two extents"), (extent_as_area, "its area")]
