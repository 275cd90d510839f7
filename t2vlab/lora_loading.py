"""LoRA on the pipeline, with diffusers' method names (the adapters themselves: ``t2vlab.lora``).

    pipe.load_lora_weights("folder or file.safetensors", adapter_name="purple")
    pipe.set_adapters(["purple"], adapter_weights=[0.8])      # or pipe.set_lora_scale(0.8)
    pipe.fuse_lora(lora_scale=1.0); pipe.unfuse_lora()        # fold into W / put W back exactly
    pipe.unload_lora_weights()                                # the plain UNet again, bit for bit
    pipe.save_lora_weights("folder", adapter_name="purple")   # pytorch_lora_weights.safetensors

The files are diffusers' LoRA format (``unet.<module path>.lora_A.weight`` / ``.lora_B.weight``), so a LoRA
trained with diffusers + peft loads here, and ours loads there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .lora import (
    LORA_WEIGHT_NAME,
    LoRAError,
    adapter_config,
    adapter_names,
    load_lora,
    lora_layers,
    lora_state_dict,
    read_lora_file,
    remove_lora,
    save_lora_file,
    set_active,
    strip_prefix,
)


class LoraLoaderMixin:
    """Mixed into ``TextToVideoPipeline`` (which provides ``unet``)."""

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, weight_name=None):
        """Add a LoRA to the UNet from a folder (holding ``pytorch_lora_weights.safetensors`` or ``weight_name``),
        a .safetensors file, or a dict of tensors. ``adapter_name`` defaults to "default_<n>"; the new
        adapter acts at once, beside those already loaded."""
        names = adapter_names(self.unet)
        adapter_name = f"default_{len(names)}" if adapter_name is None else adapter_name
        if adapter_name in names:
            raise LoRAError(f"adapter_name {adapter_name!r} is already loaded; pick another or unload it")
        source = pretrained_model_name_or_path_or_dict
        if isinstance(source, dict):
            tensors, config, label = strip_prefix(source, "unet", "the LoRA dict"), {}, "the LoRA dict"
        else:
            tensors, config = read_lora_file(source, weight_name)
            label = str(source)
        load_lora(self.unet, tensors, config, adapter_name, source=label)
        return adapter_name

    def get_list_adapters(self) -> dict:
        return {"unet": adapter_names(self.unet)}

    def get_active_adapters(self) -> list[str]:
        return list(dict.fromkeys(n for layer in lora_layers(self.unet).values() for n in layer.active))

    def set_adapters(self, adapter_names, adapter_weights=None):
        """Only these adapters act, each with its weight (default 1.0)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if isinstance(adapter_weights, (int, float)):
            adapter_weights = [adapter_weights] * len(names)
        set_active(self.unet, names, adapter_weights)

    def set_lora_scale(self, scale, adapter_name=None):
        """The weight of one adapter (None: every active one): 0 switches it off, 1 is as trained."""
        active = self.get_active_adapters()
        names = active if adapter_name is None else [adapter_name]
        weights = {n: scale for n in names}
        current = {n: layer.scale[n] for layer in lora_layers(self.unet).values() for n in layer.active}
        keep = list(dict.fromkeys(active + names))
        set_active(self.unet, keep, [weights.get(n, current.get(n, 1.0)) for n in keep])

    def disable_lora(self):
        for layer in lora_layers(self.unet).values():
            layer.unfuse()
            layer.active = []

    def enable_lora(self):
        set_active(self.unet, adapter_names(self.unet))

    def fuse_lora(self, lora_scale=1.0, adapter_names=None):
        """Fold the active adapters (or ``adapter_names``), times ``lora_scale``, into the UNet's weights:
        no extra work per step. ``unfuse_lora`` restores the weights exactly."""
        layers = lora_layers(self.unet)
        if not layers:
            raise LoRAError("fuse_lora: no LoRA is loaded")
        names = self.get_active_adapters() if adapter_names is None else list(adapter_names)
        set_active(self.unet, names, [lora_scale * self._weight(n) for n in names])
        for layer in layers.values():
            layer.fuse()

    def _weight(self, name):
        return next((layer.scale[name] for layer in lora_layers(self.unet).values() if name in layer.scale), 1.0)

    def unfuse_lora(self):
        for layer in lora_layers(self.unet).values():
            layer.unfuse()

    def unload_lora_weights(self):
        """Remove every adapter: the UNet is the plain one again, its weights exactly as before."""
        remove_lora(self.unet)

    def delete_adapters(self, adapter_names):
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            if name not in self.get_list_adapters()["unet"]:
                raise LoRAError(f"no adapter named {name!r}; loaded: {self.get_list_adapters()['unet']}")
            remove_lora(self.unet, name)

    @contextlib.contextmanager
    def scaled_lora(self, cross_attention_kwargs=None):
        """diffusers' ``cross_attention_kwargs={"scale": s}``: every adapter's weight times s for the duration (one
        call), then the weights exactly as they were (checked by ``guards.check_cross_attention_kwargs``)."""
        scale = (cross_attention_kwargs or {}).get("scale", 1.0)
        layers = lora_layers(self.unet) if scale != 1.0 else {}
        before = {path: dict(layer.scale) for path, layer in layers.items()}
        for layer in layers.values():
            layer.scale = {name: weight * scale for name, weight in layer.scale.items()}
        try:
            yield
        finally:
            for path, layer in layers.items():
                layer.scale = before[path]

    def save_lora_weights(self, save_directory, adapter_name=None, weight_name=LORA_WEIGHT_NAME):
        """Write one adapter (default: the only one) as ``save_directory/weight_name`` in diffusers' format."""
        names = adapter_names(self.unet)
        if adapter_name is None:
            if len(names) != 1:
                raise LoRAError(f"save_lora_weights: name the adapter to save (adapter_name); loaded: {names}")
            adapter_name = names[0]
        tensors = lora_state_dict(self.unet, adapter_name)
        return save_lora_file(Path(save_directory) / weight_name, tensors, adapter_config(self.unet, adapter_name))
