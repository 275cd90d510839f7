"""Typical mistakes of each exercise of the course (t2vlab.course): learners' wrong functions, each with what
the check must say about it (a regular expression). tests/test_course.py runs every one; each exercise needs at
least two. One section per notebook, in notebook order."""

from __future__ import annotations

import math

import torch

MISTAKES = {}  # key -> [(a learner's wrong function, what the check must say)]


# ---------------------------------------------------------------------------------- 00: the toy world's judge
def mask_against_black(video, threshold=0.25):
    return video.amax(-1) > threshold


def mask_mean_of_channels(video, threshold=0.25):
    border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1).reshape(-1, 3)
    return (video - border.median(0).values).abs().mean(-1) > threshold


MISTAKES["00.foreground"] = [(mask_against_black, "comparing with black"),
                             (mask_mean_of_channels, "the mean of the channels")]


def centroid_row_first(mask):
    w = mask.float()
    ys, xs = torch.arange(mask.shape[1]).float()[:, None], torch.arange(mask.shape[2]).float()[None, :]
    return torch.stack([(w * ys).sum((1, 2)), (w * xs).sum((1, 2))], -1) / w.sum((1, 2))[:, None]


def centroid_sum_not_mean(mask):
    w = mask.float()
    ys, xs = torch.arange(mask.shape[1]).float()[:, None], torch.arange(mask.shape[2]).float()[None, :]
    return torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], -1)


MISTAKES["00.centroids"] = [(centroid_row_first, r"\(y, x\), row first"),
                            (centroid_sum_not_mean, "without dividing by the number")]


# ---------------------------------------------------------------------------------- 01: text
def frame_without_end(pieces, start, end, pad, length=77):
    ids = [start, *pieces[:length - 2]]
    return torch.tensor(ids + [pad] * (length - len(ids)))


def frame_padding_with_end(pieces, start, end, pad, length=77):
    ids = [start, *pieces[:length - 2], end]
    return torch.tensor(ids + [end] * (length - len(ids)))


def frame_cut_at_length(pieces, start, end, pad, length=77):
    ids = [start, *pieces, end][:length]
    return torch.tensor(ids + [pad] * (length - len(ids)))


MISTAKES["01.frame"] = [(frame_without_end, "without the end token"),
                        (frame_padding_with_end, "padding with the end token's id"),
                        (frame_cut_at_length, "pushes the end token out")]


def causal_attention_unmasked(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v


def causal_attention_upper(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    past = torch.ones(scores.shape[-2:], dtype=torch.bool).tril(-1)
    return scores.masked_fill(past, float("-inf")).softmax(-1) @ v


MISTAKES["01.causal_attention"] = [(causal_attention_unmasked, "without the causal mask"),
                                   (causal_attention_upper, "the wrong way round")]


# ---------------------------------------------------------------------------------- 02: samplers
def posterior_cumulative_beta(x0, x_t, abar_t, abar_prev):
    alpha = abar_t / abar_prev
    mean = (abar_prev.sqrt() * (1 - abar_t) * x0 + alpha.sqrt() * (1 - abar_prev) * x_t) / (1 - abar_t)
    return mean, (1 - abar_prev) / (1 - abar_t) * (1 - abar_t)


def posterior_fixed_large(x0, x_t, abar_t, abar_prev):
    alpha = abar_t / abar_prev
    mean = (abar_prev.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - abar_prev) * x_t) / (1 - abar_t)
    return mean, 1 - alpha


MISTAKES["02.posterior"] = [(posterior_cumulative_beta, "beta_t = 1 - abar_t"),
                            (posterior_fixed_large, "fixed_large")]


def ddim_renoise_at_t(eps, x, abar_t, abar_prev):
    x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_t).sqrt() * eps


def ddim_undivided(eps, x, abar_t, abar_prev):
    return abar_prev.sqrt() * (x - (1 - abar_t).sqrt() * eps) + (1 - abar_prev).sqrt() * eps


MISTAKES["02.ddim_step"] = [(ddim_renoise_at_t, "the noise level of t, not of t'"),
                            (ddim_undivided, "without dividing x0_hat by sqrt")]


# ---------------------------------------------------------------------------------- 03: the VAE
def kl_with_std(mean, logvar):
    return 0.5 * (mean.pow(2) + (0.5 * logvar).exp() - 1 - logvar).sum((1, 2, 3))


def kl_averaged(mean, logvar):
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean((1, 2, 3))


MISTAKES["03.kl"] = [(kl_with_std, "with the standard deviation"), (kl_averaged, "averaging over")]


def sample_scaled_by_variance(mean, logvar, noise):
    return mean + logvar.exp() * noise


def sample_without_mean(mean, logvar, noise):
    return (0.5 * logvar).exp() * noise


def sample_detached(mean, logvar, noise):
    return (mean + (0.5 * logvar).exp() * noise).detach()


MISTAKES["03.sample"] = [(sample_scaled_by_variance, "with the variance exp\\(logvar\\)"),
                         (sample_without_mean, "without the mean"), (sample_detached, "no gradient")]


# ---------------------------------------------------------------------------------- 04: attention
def attention_no_scale(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def attention_softmax_over_queries(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v


MISTAKES["04.attention"] = [(attention_no_scale, "without the 1/sqrt\\(d\\) scale"),
                            (attention_softmax_over_queries, "softmax over the queries")]


def multihead_without_transpose(attn, x, context=None):
    context = x if context is None else context
    B, N, M, H, d = x.shape[0], x.shape[1], context.shape[1], attn.heads, attn.dim_head
    q, k, v = attn.to_q(x).reshape(B, H, N, d), attn.to_k(context).reshape(B, H, M, d), \
        attn.to_v(context).reshape(B, H, M, d)
    return attn.to_out[0](((q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(-1) @ v).reshape(B, N, H * d))


def multihead_without_output_projection(attn, x, context=None):
    context = x if context is None else context
    B, N, M, H, d = x.shape[0], x.shape[1], context.shape[1], attn.heads, attn.dim_head
    q = attn.to_q(x).reshape(B, N, H, d).transpose(1, 2)
    k = attn.to_k(context).reshape(B, M, H, d).transpose(1, 2)
    v = attn.to_v(context).reshape(B, M, H, d).transpose(1, 2)
    return ((q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(-1) @ v).transpose(1, 2).reshape(B, N, H * d)


MISTAKES["04.multihead"] = [(multihead_without_transpose, "no transpose"),
                            (multihead_without_output_projection, "without the output projection")]


# ---------------------------------------------------------------------------------- 05: the UNet
def fold_plain_reshape(video):
    B, C, F, H, W = video.shape
    return video.reshape(B * F, C, H, W)


def fold_video_index_fastest(video):
    B, C, F, H, W = video.shape
    return video.permute(2, 0, 1, 3, 4).reshape(F * B, C, H, W)


MISTAKES["05.fold"] = [(fold_plain_reshape, "plain reshape"), (fold_video_index_fastest, "video index fastest")]


def embedding_sin_first(t, dim):
    angles = t.float()[:, None] * 10000 ** (-torch.arange(dim // 2) / (dim // 2))
    return torch.cat([angles.sin(), angles.cos()], -1)


def embedding_linear_frequencies(t, dim):
    angles = t.float()[:, None] * torch.arange(dim // 2) / (dim // 2)
    return torch.cat([angles.cos(), angles.sin()], -1)


MISTAKES["05.timestep_embedding"] = [(embedding_sin_first, "sin half first"),
                                     (embedding_linear_frequencies, "linear frequencies")]


def level_without_temporal_conv(level, x, temb, context, num_frames):
    skips = []
    for i in range(len(level.resnets)):
        x = level.temp_attentions[i](level.attentions[i](level.resnets[i](x, temb), context), num_frames)
        skips.append(x)
    x = level.downsamplers[0](x)
    return x, skips + [x]


def level_temporal_before_spatial(level, x, temb, context, num_frames):
    skips = []
    for i in range(len(level.resnets)):
        x = level.temp_convs[i](level.resnets[i](x, temb), num_frames)
        x = level.attentions[i](level.temp_attentions[i](x, num_frames), context)
        skips.append(x)
    x = level.downsamplers[0](x)
    return x, skips + [x]


def level_without_the_last_skip(level, x, temb, context, num_frames):
    skips = []
    for i in range(len(level.resnets)):
        x = level.layer(i, x, temb, context, num_frames)
        skips.append(x)
    return level.downsamplers[0](x), skips


MISTAKES["05.level"] = [(level_without_temporal_conv, "without the temporal convolution"),
                        (level_temporal_before_spatial, "temporal transformer before the spatial one"),
                        (level_without_the_last_skip, "a list of 3 tensors")]


# ---------------------------------------------------------------------------------- 06: the pipeline
def guide_from_cond(eps_u, eps_c, guidance_scale):
    return eps_c + guidance_scale * (eps_c - eps_u)


def guide_reversed(eps_u, eps_c, guidance_scale):
    return eps_u + guidance_scale * (eps_u - eps_c)


MISTAKES["06.guidance"] = [(guide_from_cond, "starting from eps_c"), (guide_reversed, "the wrong way round")]


def guided_video_by_the_pipeline(pipe, prompt, guidance_scale, steps, num_frames, height, width, negative_prompt="",
                                 seed=0):
    return pipe(prompt, num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
                guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                generator=torch.Generator().manual_seed(seed), output_type="pt").frames[0]


def guided_video_cond_first(pipe, prompt, guidance_scale, steps, num_frames, height, width, negative_prompt="", seed=0):
    cond, uncond = pipe.encode_prompt(prompt, pipe.device, negative_prompt=negative_prompt)
    pipe.scheduler.set_timesteps(steps)
    x = pipe.prepare_latents(1, num_frames, height, width, cond.dtype, pipe.device, torch.Generator().manual_seed(seed))
    for t in pipe.scheduler.timesteps:
        with torch.no_grad():
            eps_u, eps_c = pipe.unet(torch.cat([x, x]), t, torch.cat([cond, uncond])).chunk(2)
        x, _ = pipe.step(eps_u + guidance_scale * (eps_c - eps_u), t, x)
    return pipe.decode_latents(x)[0]


MISTAKES["06.guided_video"] = [(guided_video_by_the_pipeline, "skipping the unconditional call"),
                               (guided_video_cond_first, r"stacked \[cond, uncond\]")]


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
def slow_in_place(labels):
    labels["travel"] = 14 + (labels["travel"] - 30) / 4 * 2
    labels["start"] = 23 + (labels["start"] - 13) / 6 * 3
    return labels


def slow_start_kept(labels):
    return {**labels, "travel": 14 + (labels["travel"] - 30) / 4 * 2}


def slow_halved(labels):
    return {**labels, "travel": labels["travel"] / 2, "start": 23 + (labels["start"] - 13) / 6 * 3}


MISTAKES["16.slow"] = [(slow_in_place, "changed them in place"), (slow_start_kept, "with the start left as it was"),
                       (slow_halved, r"halved \(travel / 2\)")]


def _shift(video):
    from t2vlab.toy.evaluate import centroids, foreground

    mask, _ = foreground(video)
    shown = [f for f in range(len(mask)) if mask[f].any()]
    path = centroids(mask)
    return path[shown[-1]] - path[shown[0]]


def travel_signed(video):
    dx, dy = _shift(video).tolist()
    return dx if abs(dx) >= abs(dy) else dy


def travel_horizontal(video):
    return abs(_shift(video)[0].item())


def travel_per_frame(video):
    return _shift(video).abs().max().item() / 7


MISTAKES["16.travel"] = [(travel_signed, "the signed shift"), (travel_horizontal, "horizontal shift alone"),
                         (travel_per_frame, "per frame")]


# ---------------------------------------------------------------------------------- 17: few steps
def scalings_without_timestep_scaling(t, timestep_scaling=10.0, sigma_data=0.5):
    return sigma_data**2 / (t**2 + sigma_data**2), t / (t**2 + sigma_data**2) ** 0.5


def scalings_swapped(t, timestep_scaling=10.0, sigma_data=0.5):
    u = timestep_scaling * t
    return u / (u**2 + sigma_data**2) ** 0.5, sigma_data**2 / (u**2 + sigma_data**2)


def scalings_as_song(t, timestep_scaling=10.0, sigma_data=0.5):
    u = timestep_scaling * t
    return sigma_data**2 / (u**2 + sigma_data**2), sigma_data * u / (u**2 + sigma_data**2) ** 0.5


MISTAKES["17.boundary_scalings"] = [(scalings_without_timestep_scaling, "without the timestep scaling"),
                                    (scalings_swapped, "c_skip and c_out swapped"),
                                    (scalings_as_song, "Song et al.'s c_out")]


def teacher_step_lcm_guidance(x, eps_uncond, eps_cond, w, abar_start, abar_end):
    eps = eps_cond + w * (eps_cond - eps_uncond)
    x0 = (x - (1 - abar_start).sqrt() * eps) / abar_start.sqrt()
    return abar_end.sqrt() * x0 + (1 - abar_end).sqrt() * eps


def teacher_step_to_x0(x, eps_uncond, eps_cond, w, abar_start, abar_end):
    eps = eps_uncond + w * (eps_cond - eps_uncond)
    return (x - (1 - abar_start).sqrt() * eps) / abar_start.sqrt()


def teacher_step_unguided(x, eps_uncond, eps_cond, w, abar_start, abar_end):
    x0 = (x - (1 - abar_start).sqrt() * eps_cond) / abar_start.sqrt()
    return abar_end.sqrt() * x0 + (1 - abar_end).sqrt() * eps_cond


MISTAKES["17.teacher_step"] = [(teacher_step_lcm_guidance, "LCM's guidance form"),
                               (teacher_step_to_x0, "stopping at x0"),
                               (teacher_step_unguided, "without guidance")]


def consistency_without_skip(x, eps, t, abar, timestep_scaling=10.0):
    return (x - (1 - abar).sqrt() * eps) / abar.sqrt()


def consistency_swapped(x, eps, t, abar, timestep_scaling=10.0):
    u = timestep_scaling * t.float().reshape(-1, 1, 1, 1, 1)
    c_skip, c_out = 0.25 / (u**2 + 0.25), u / (u**2 + 0.25) ** 0.5
    return c_out * x + c_skip * (x - (1 - abar).sqrt() * eps) / abar.sqrt()


MISTAKES["17.consistency_function"] = [(consistency_without_skip, "the x0 estimate alone"),
                                       (consistency_swapped, "c_skip and c_out swapped")]


# ---------------------------------------------------------------------------------- 18: directing
def hold_clean_keyframe(x, z, eps, frames, abar, strengths):
    out = x.clone()
    for k, (f, w) in enumerate(zip(frames, strengths)):
        out[:, :, f] = w * z[:, :, k] + (1 - w) * x[:, :, f]
    return out


def hold_in_place(x, z, eps, frames, abar, strengths):
    for k, (f, w) in enumerate(zip(frames, strengths)):
        x[:, :, f] = w * (abar.sqrt() * z[:, :, k] + (1 - abar).sqrt() * eps[:, :, k]) + (1 - w) * x[:, :, f]
    return x


def hold_with_swapped_roots(x, z, eps, frames, abar, strengths):
    out = x.clone()
    for k, (f, w) in enumerate(zip(frames, strengths)):
        out[:, :, f] = w * ((1 - abar).sqrt() * z[:, :, k] + abar.sqrt() * eps[:, :, k]) + (1 - w) * x[:, :, f]
    return out


MISTAKES["18.hold"] = [(hold_clean_keyframe, "clean keyframe, not noised"), (hold_in_place, "in place"),
                       (hold_with_swapped_roots, "swapped")]


def circular_zero_padded(x, weight, bias):
    import torch.nn.functional as F

    return F.conv3d(x, weight, bias, padding=(1, 0, 0))


def circular_the_wrong_way(x, weight, bias):
    import torch
    import torch.nn.functional as F

    return F.conv3d(torch.cat([x[:, :, 1:2], x, x[:, :, -2:-1]], dim=2), weight, bias)


def circular_rolled_the_wrong_way(x, weight, bias):
    import torch

    previous, following = torch.roll(x, -1, dims=2), torch.roll(x, 1, dims=2)  # the wrong way round
    w = weight[..., 0, 0]
    h = sum(torch.einsum("oc,bcfhw->bofhw", w[:, :, k], v) for k, v in enumerate((previous, x, following)))
    return h + bias[:, None, None, None]


MISTAKES["18.circular"] = [(circular_zero_padded, "with zero padding"),
                           (circular_rolled_the_wrong_way, "the wrong way round"),
                           (circular_the_wrong_way, "differs from the package's")]
