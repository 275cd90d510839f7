"""The switches of the training-free techniques, as methods of ``TextToVideoPipeline``.

Each technique lives in its own module; these methods only turn it on and off, with diffusers' names:

- ``enable_freeu`` / ``disable_freeu``            FreeU on the UNet (``t2vlab.unet.freeu``)
- ``enable_free_init`` / ``disable_free_init``    FreeInit, several sampling passes (``t2vlab.free_init``)
- ``enable_free_noise`` / ``disable_free_noise``  FreeNoise for long videos (``t2vlab.free_noise``)
- ``enable_deepcache`` / ``disable_deepcache``    DeepCache: deep features reused across steps (``unet/deepcache.py``)
- ``prompt_interpolation_callback``              prompt travel's rule between keyframes (``t2vlab.prompt_travel``)
- ``enable_vae_slicing``, ``enable_vae_tiling``, ``enable_attention_slicing`` (and ``disable_*``): the
  memory knobs, passed on to the VAE and the UNet

Switched off (the default), every number is the plain pipeline's.
"""

from __future__ import annotations

from .free_init import FreeInit
from .free_noise import FreeNoise


class TrainingFreeSwitches:
    """Mixed into ``TextToVideoPipeline`` (which provides ``unet``, ``vae`` and ``recommended``)."""

    free_init = None  # FreeInit settings while enable_free_init is on
    free_noise = None  # FreeNoise settings while enable_free_noise is on
    prompt_interpolation_callback = None  # prompt travel's rule; None: linear

    def enable_freeu(self, s1=0.9, s2=0.2, b1=1.2, b2=1.4):
        """FreeU on the UNet (``t2vlab.unet.freeu``); the defaults are the values diffusers documents for
        text-to-video-ms-1.7b (s1 0.9, s2 0.2, b1 1.2, b2 1.4)."""
        self.unet.enable_freeu(s1, s2, b1, b2)

    def disable_freeu(self):
        self.unet.disable_freeu()

    def enable_free_init(self, num_iters=3, use_fast_sampling=False, method="butterworth", order=4,
                         spatial_stop_frequency=0.25, temporal_stop_frequency=0.25):
        """FreeInit (``t2vlab.free_init``): sample ``num_iters`` times, each pass starting from the low
        frequencies of the last result diffused back, with fresh noise for the high ones."""
        self.free_init = FreeInit(num_iters, use_fast_sampling, method, order, spatial_stop_frequency,
                                  temporal_stop_frequency)

    def disable_free_init(self):
        self.free_init = None

    def enable_free_noise(self, context_length=16, context_stride=4, weighting_scheme="pyramid",
                          noise_type="shuffle_context", prompt_interpolation_callback=None):
        """FreeNoise (``t2vlab.free_noise``) for videos longer than the model's clips: reschedule the noise
        and window the temporal attention (``context_length`` frames, ``context_stride`` apart; None: the
        checkpoint's own clip length, ``recommended.num_frames``)."""
        if prompt_interpolation_callback is not None and not callable(prompt_interpolation_callback):
            raise ValueError(f"prompt_interpolation_callback must be callable, got "
                             f"{prompt_interpolation_callback!r:.80}")
        context_length = self.recommended.num_frames if context_length is None else context_length
        self.free_noise = FreeNoise(context_length, context_stride, weighting_scheme, noise_type)
        self.unet.enable_free_noise(context_length, context_stride, weighting_scheme)
        if prompt_interpolation_callback is not None:
            self.prompt_interpolation_callback = prompt_interpolation_callback

    def disable_free_noise(self):
        self.free_noise = None
        self.unet.disable_free_noise()

    def enable_deepcache(self, cache_interval=3, cache_branch=0):
        """DeepCache (``t2vlab.unet.deepcache``): the whole UNet every ``cache_interval`` steps, in between only
        its outer levels 0..``cache_branch`` on the deep features kept from the last full step. Faster, and
        not the same video: ``docs/benchmarks.md`` measures what it costs. ``cache_interval=1``: the plain numbers."""
        if getattr(self, "compiled", None):
            raise ValueError("enable_deepcache: the pipeline is compiled; DeepCache's step rule runs in Python "
                             "between calls, so call pipe.uncompile() first (or enable DeepCache instead of compiling)")
        self.unet.enable_deepcache(cache_interval, cache_branch)

    def disable_deepcache(self):
        self.unet.disable_deepcache()

    # ---------------------------------------------------------------------------- memory knobs
    def enable_vae_slicing(self, frames_per_slice=1):
        """Decode and encode ``frames_per_slice`` frames at a time: the VAE's peak memory stops growing with frames."""
        self.vae.enable_slicing(frames_per_slice)

    def disable_vae_slicing(self):
        self.vae.disable_slicing()

    def enable_vae_tiling(self, tile_size=None, overlap=None):
        self.vae.enable_tiling(tile_size, overlap)

    def disable_vae_tiling(self):
        self.vae.disable_tiling()

    def enable_attention_slicing(self, slice_size="auto"):
        self.unet.enable_attention_slicing(slice_size)

    def disable_attention_slicing(self):
        self.unet.disable_attention_slicing()
