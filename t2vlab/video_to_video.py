"""VideoToVideoPipeline: restyle a video with a new prompt (SDEdit), on the text-to-video denoising loop.

SDEdit (Meng et al., 2022) in one line: encode the video, run the forward process part of the way,
then the reverse process from there with the new prompt. ``strength`` s in (0, 1] says how far:

    n = int(num_inference_steps * s)          the last n timesteps of the schedule are run
    t_start = timesteps[num_inference_steps - n]
    x_start = sqrt(abar_t_start) z0 + sqrt(1 - abar_t_start) eps      (scheduler.add_noise)

Small s keeps the video's layout and motion (little noise: only details are redrawn); s = 1 starts
from (almost) pure noise and keeps only what survives at t = T - 1. The argument names, defaults and
random draws are those of diffusers' ``VideoToVideoSDPipeline``: one generator gives the same frames
(the posterior sample of the VAE first, then the noise, both over the frames folded into the batch).
Unlike the reference, the VAE encodes frame slices when ``enable_vae_slicing()`` is on, and with FreeNoise
on (``pipe.enable_free_noise``) the added noise is rescheduled as text-to-video's starting noise is (the
reference's video-to-video pipelines window the attention only). FreeInit, whose passes start again from
pure noise, is refused.

The "hi-res fix" is the same call on a bigger model: generate small with one checkpoint, resize the
frames (``resize_video``) and re-denoise them at strength 0.6-0.85 with a larger one (zeroscope_v2_576w
then zeroscope_v2_XL); ``python -m t2vlab "prompt" --model A --upscale-with B`` does both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import checks
from .callbacks import Conditioning, StepCallbacks
from .guards import (
    check_component,
    check_frames_shape,
    check_latents_or_pixels,
    check_video_count,
    check_video_latents,
    check_video_to_video_args,
    explain_out_of_memory,
)
from .inputs import video_input
from .noise import draw_noise
from .pipeline import TextToVideoOutput, TextToVideoPipeline


def is_latents(video, channels=4) -> bool:
    """A tensor (videos, C, frames, h, w) of C = 4 latents (what ``output_type="latent"`` returns), not pixels:
    (videos, frames, H, W, 3), or channels first (videos, frames, 3, H, W) as diffusers' video tensors are. A pixel
    video of 4 frames has 3 channels last, which latents never have here; channels first, (V, 4, 3, H, W), it has the
    shape of 3-frame latents, and is told apart by its values: pixels lie in [0, 1], latents almost never do
    (``guards.check_latents_or_pixels`` refuses such a tensor with every value in [0, 1])."""
    if not (torch.is_tensor(video) and video.ndim == 5 and video.shape[1] == channels and video.shape[-1] != 3):
        return False
    return video.shape[2] != 3 or bool(((video < 0) | (video > 1)).any())


def resize_video(video, height, width):
    """Any accepted video (see ``t2vlab.inputs.video_input``) -> float32 tensor (videos, frames, height, width, 3)
    in [0, 1], each frame resized bicubically (antialiased when shrinking): the step between the two passes
    of the hi-res fix."""
    checks.positive_int("height", height)
    checks.positive_int("width", width)
    pixels = torch.from_numpy(video_input(video))
    out = torch.empty((*pixels.shape[:2], height, width, 3))
    for b, f in ((b, f) for b in range(pixels.shape[0]) for f in range(pixels.shape[1])):
        frame = pixels[b, f].permute(2, 0, 1)[None]
        frame = F.interpolate(frame, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        out[b, f] = frame[0].permute(1, 2, 0).clamp(0, 1)
    return out


class VideoToVideoPipeline(TextToVideoPipeline):
    """``pipe(prompt, video, strength=0.6)``: the video redrawn to follow the prompt (see the module).

    Loads like the text-to-video pipeline (``from_pretrained``), or shares an existing pipeline's models:
    ``VideoToVideoPipeline.from_pipe(pipe)``. Everything but ``__call__`` is the text-to-video pipeline's.
    """

    reference_class = "VideoToVideoSDPipeline"  # diffusers' class of the same pipeline (model_index.json)

    def video_tensor(self, video):
        """``video`` as a tensor: pixels (V, F, H, W, 3) in [0, 1] (on the CPU; moved slice by slice when
        encoded), or latents (V, 4, F, h, w) as given. Checked before any model runs."""
        channels = self.unet.config.in_channels
        check_latents_or_pixels("video", video, channels)
        if is_latents(video, channels):
            check_video_latents("video", video, channels)
            return video
        if video is None:
            raise ValueError("video is missing: pass the video to restyle (frames, an array, a tensor or a path)")
        pixels = torch.from_numpy(video_input(video, "video"))
        check_component(self, "vae", "video: encoding its frames (latents (V, 4, F, h, w) as the video need none)")
        check_frames_shape("video", pixels.shape[1], pixels.shape[2], pixels.shape[3], self.vae_scale_factor)
        return pixels

    def get_timesteps(self, num_inference_steps, strength):
        """The tail of the schedule that SDEdit runs: its last int(num_inference_steps * strength) steps
        (``set_timesteps`` first)."""
        n = min(int(num_inference_steps * strength), num_inference_steps)
        return self.scheduler.timesteps[(num_inference_steps - n) * self.scheduler.order:]

    def noise_video(self, z0, timestep, generator, noise=None):
        """x_t = q(x_t | z0): the forward process from the video's latents (B, C, F, h, w) to ``timestep``.
        The noise is drawn over the frames folded into the batch (B*F, C, h, w), as the reference does; with
        FreeNoise on, rescheduled as text-to-video's starting noise is."""
        if noise is None:
            b, c, f, h, w = z0.shape
            noise = draw_noise((b, f, c, h, w), generator, z0.device, z0.dtype).transpose(1, 2)
            if self.free_noise is not None:  # FreeNoise: later frames reuse the first window's noise
                noise = self.free_noise.reschedule(noise, generator)
        return self.scheduler.add_noise(z0, noise.to(z0.device, z0.dtype), timestep)

    def __call__(self, prompt=None, video=None, strength=0.6, num_inference_steps=50, guidance_scale=15.0,
                 negative_prompt=None, eta=0.0, generator=None, latents=None, prompt_embeds=None,
                 negative_prompt_embeds=None, output_type="np", return_dict=True, callback_on_step_end=None,
                 clip_skip=None, callback=None, callback_steps=None, cross_attention_kwargs=None,
                 callback_on_step_end_tensor_inputs=None):
        """Restyle ``video`` to follow ``prompt``. Returns ``TextToVideoOutput`` (``.frames``, as text-to-video).

        ``video``: a list of frames (arrays or PIL images), an array or tensor (F, H, W, 3) (uint8, or float
        in [0, 1]), a batch (V, F, H, W, 3) such as a pipeline's ``.frames``, the same channels first (V, F, 3, H, W)
        as diffusers' video tensors are (``t2vlab.video.frames_last``), a path to a video file, or latents
        (V, 4, F, h, w) (encoding skipped). One video serves every prompt; or pass one per prompt.
        ``latents``: the noise added to the encoded video (V, 4, F, h, w), in place of a draw. The callbacks and
        ``cross_attention_kwargs`` are text-to-video's (``TextToVideoPipeline.__call__``).

        0. check every argument and read the video, before any model runs;
        1. encode the prompt and, for classifier-free guidance, the negative prompt -> context;
        2. timesteps: the last int(num_inference_steps * strength) of the schedule;
        3. encode the video -> z0 (a sample of the VAE's posterior: the first draw), and noise it to the
           first of those timesteps (the second draw);
        4. denoise from there (``denoise``, the loop of text-to-video);
        5. decode the latents through the VAE -> frames (B, F, H, W, 3) in [0, 1].
        """
        prompts = check_video_to_video_args(self, prompt, strength, num_inference_steps, guidance_scale,
                                            negative_prompt, eta, generator, latents, prompt_embeds,
                                            negative_prompt_embeds, output_type, callback_on_step_end, callback,
                                            callback_steps, callback_on_step_end_tensor_inputs, cross_attention_kwargs)
        callbacks = StepCallbacks(callback_on_step_end, callback_on_step_end_tensor_inputs, callback, callback_steps)
        source = self.video_tensor(video)
        if len(source) not in (1, prompts):
            raise ValueError(f"video: {len(source)} videos for {prompts} prompt(s); pass one video, or one per prompt")
        check_video_count(prompts, generator, f"{prompts} prompt(s)")
        encoded, factor = is_latents(source, self.unet.config.in_channels), self.vae_scale_factor
        if encoded:
            frames, height, width = source.shape[2], source.shape[3] * factor, source.shape[4] * factor
        else:
            frames, height, width = source.shape[1:4]
        shape = (prompts, self.unet.config.in_channels, frames, height // factor, width // factor)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents: the noise for this video must have shape {shape}, got {tuple(latents.shape)}")
        with explain_out_of_memory(self, prompts, frames, height, width, num_inference_steps), \
                self.scaled_lora(cross_attention_kwargs):
            device, guided = self.device, self.classifier_free_guidance(guidance_scale)
            cond, uncond = self.encode_prompt(prompt, device, 1, guided, negative_prompt, prompt_embeds,
                                              negative_prompt_embeds, clip_skip)
            context = Conditioning(torch.cat([uncond, cond]) if guided else cond, guidance_scale,
                                   self.guidance_embedded)  # read at each step

            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.get_timesteps(num_inference_steps, strength)

            source = source.expand(prompts, *source.shape[1:])  # one video for every prompt
            if encoded:
                z0 = source.to(device=device, dtype=context.dtype)
            else:
                z0 = self.encode_video(source, generator).to(context.dtype)
            x = self.noise_video(z0, timesteps[:1], generator, latents)

            x = self.denoise(x, context, timesteps, guidance_scale, eta, generator, callbacks)

            out = self.finish(x, output_type, guidance_scale)
        return TextToVideoOutput(frames=out) if return_dict else (out,)
