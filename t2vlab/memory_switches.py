"""The pipeline's memory switches, with diffusers' names, passed on to the models that hold the memory:

- ``enable_model_cpu_offload``                    each model on the GPU only while it runs (``pipe.running``)
- ``enable_vae_slicing`` / ``enable_vae_tiling``  the VAE decodes (and encodes) a few frames / tiles at a time
- ``enable_attention_slicing``                    the UNet's attention a few heads at a time
- ``enable_layerwise_casting``                    every model's weights stored in 8 bits (or another dtype), each
                                                  layer cast up for its own forward (``t2vlab.layerwise_casting``)
- ``enable_group_offload``                        every model's weights brought to the GPU a group of blocks at
                                                  a time (``t2vlab.group_offload``)

Switched off (the default), every number is the plain pipeline's.
"""

from __future__ import annotations

import os
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

    def enable_layerwise_casting(self, storage_dtype=torch.float8_e4m3fn, compute_dtype=None, models=None,
                                 **kwargs):
        """``enable_layerwise_casting`` on each model (default: all present; ``models`` names some, e.g.
        ("unet",)), with its keyword arguments (``skip_modules_pattern``, ...): diffusers has it per model only."""
        for model in self._chosen_models(models, "enable_layerwise_casting").values():
            model.enable_layerwise_casting(storage_dtype, compute_dtype, **kwargs)

    def disable_layerwise_casting(self, models=None):
        for model in self._chosen_models(models, "disable_layerwise_casting").values():
            model.disable_layerwise_casting()

    def enable_group_offload(self, onload_device, offload_device="cpu", offload_type="block_level", models=None,
                             offload_to_disk_path=None, **kwargs):
        """``enable_group_offload`` on each model (default: all present), with its keyword arguments; with
        ``offload_to_disk_path`` each model keeps its files in a folder of its own name inside it."""
        for name, model in self._chosen_models(models, "enable_group_offload").items():
            path = None if offload_to_disk_path is None else os.path.join(offload_to_disk_path, name)
            model.enable_group_offload(onload_device, offload_device, offload_type, offload_to_disk_path=path,
                                       **kwargs)

    def disable_group_offload(self, models=None):
        for model in self._chosen_models(models, "disable_group_offload").values():
            model.disable_group_offload()

    def _chosen_models(self, names, what):
        """{name: model} of the present models ``names`` asks for (None: all), a bad name refused by name."""
        present = self.models
        if names is None:
            return present
        chosen = {}
        for name in [names] if isinstance(names, str) else list(names):
            if name not in present:
                raise ValueError(f"{what}: models={names!r}: {name!r} is not one of this pipeline's models "
                                 f"({', '.join(present)})")
            chosen[name] = present[name]
        return chosen

