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
