"""The pipeline's switches of the techniques (``t2vlab.techniques``), with diffusers' names.

Each is a one-liner into its technique; the state they set is declared in ``TextToVideoPipeline.__init__``:

- ``enable_freeu`` / ``disable_freeu``            FreeU on the UNet (``techniques.freeu``)
- ``enable_free_init`` / ``disable_free_init``    FreeInit, several sampling passes (``techniques.free_init``):
                                                  sets ``pipe.free_init``
- ``enable_free_noise`` / ``disable_free_noise``  FreeNoise for long videos (``techniques.free_noise``): sets
                                                  ``pipe.free_noise`` (noise rescheduling) and the UNet's windows
- ``enable_deepcache`` / ``disable_deepcache``    DeepCache on the UNet (``techniques.deepcache``)

Switched off (the default), every number is the plain pipeline's.
"""

from __future__ import annotations

from . import checks
from .techniques.free_init import FreeInit
from .techniques.free_noise import FreeNoise, set_windows


class TechniqueSwitches:
    """Mixed into ``TextToVideoPipeline``; reads and sets only what its ``__init__`` declares."""

    def enable_freeu(self, s1=0.9, s2=0.2, b1=1.2, b2=1.4):
        """FreeU on the UNet; the defaults are the values diffusers documents for text-to-video-ms-1.7b."""
        self.unet.enable_freeu(s1, s2, b1, b2)

    def disable_freeu(self):
        self.unet.disable_freeu()

    def enable_free_init(self, num_iters=3, use_fast_sampling=False, method="butterworth", order=4,
                         spatial_stop_frequency=0.25, temporal_stop_frequency=0.25):
        """FreeInit: sample ``num_iters`` times, each pass starting from the low frequencies of the last
        result diffused back, with fresh noise for the high ones."""
        self.free_init = FreeInit(num_iters, use_fast_sampling, method, order, spatial_stop_frequency,
                                  temporal_stop_frequency)

    def disable_free_init(self):
        self.free_init = None

    def enable_free_noise(self, context_length=16, context_stride=4, weighting_scheme="pyramid",
                          noise_type="shuffle_context", prompt_interpolation_callback=None):
        """FreeNoise for videos longer than the model's clips: reschedule the noise and window the temporal
        attention (``context_length`` frames, ``context_stride`` apart; None: the checkpoint's own clip
        length, ``recommended.num_frames``). ``prompt_interpolation_callback``: prompt travel's rule between
        keyframes (diffusers' place for it; also settable as ``pipe.prompt_interpolation_callback``)."""
        checks.callable_or_none("prompt_interpolation_callback", prompt_interpolation_callback)
        context_length = self.recommended.num_frames if context_length is None else context_length
        self.free_noise = FreeNoise(context_length, context_stride, weighting_scheme, noise_type)
        set_windows(self.unet, self.free_noise)
        if prompt_interpolation_callback is not None:
            self.prompt_interpolation_callback = prompt_interpolation_callback

    def disable_free_noise(self):
        self.free_noise = None
        set_windows(self.unet, None)

    def enable_deepcache(self, cache_interval=3, cache_branch=0):
        """DeepCache: the whole UNet every ``cache_interval`` steps, in between only its outer levels
        0..``cache_branch`` on the deep features kept from the last full step. Faster, and not the same
        video: ``docs/benchmarks.md`` measures what it costs. ``cache_interval=1``: the plain numbers."""
        self.unet.enable_deepcache(cache_interval, cache_branch)

    def disable_deepcache(self):
        self.unet.disable_deepcache()
