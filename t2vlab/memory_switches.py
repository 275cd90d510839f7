"""The pipeline's memory switches, with diffusers' names, passed on to the models that hold the memory:

- ``enable_model_cpu_offload``                    each model on the GPU only while it runs (``pipe.running``)
- ``enable_vae_slicing`` / ``enable_vae_tiling``  the VAE decodes (and encodes) a few frames / tiles at a time
- ``enable_attention_slicing``                    the UNet's attention a few heads at a time

Switched off (the default), every number is the plain pipeline's.
"""

from __future__ import annotations

import warnings

import torch


class MemorySwitches:
    """Mixed into ``TextToVideoPipeline``; reads and sets only what its ``__init__`` declares."""

    def enable_model_cpu_offload(self, device="cuda"):
        """Keep the models in CPU memory; move each to ``device`` only while it runs (text encoder,
        then UNet, then VAE). Without a GPU this changes nothing and says so."""
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            warnings.warn("enable_model_cpu_offload: no CUDA GPU here, so everything stays on the CPU",
                          stacklevel=2)
            return
        self.to("cpu")
        self.offload_device = device

    def enable_vae_slicing(self, frames_per_slice=1):
        """Decode and encode ``frames_per_slice`` frames at a time: the VAE's peak memory stops growing with frames.
        (A pipeline without a VAE has nothing to slice: the VAE switches then do nothing.)"""
        if self.vae is not None:
            self.vae.enable_slicing(frames_per_slice)

    def disable_vae_slicing(self):
        if self.vae is not None:
            self.vae.disable_slicing()

    def enable_vae_tiling(self, tile_size=None, overlap=None):
        if self.vae is not None:
            self.vae.enable_tiling(tile_size, overlap)

    def disable_vae_tiling(self):
        if self.vae is not None:
            self.vae.disable_tiling()

    def enable_attention_slicing(self, slice_size="auto"):
        self.unet.enable_attention_slicing(slice_size)

    def disable_attention_slicing(self):
        self.unet.disable_attention_slicing()
