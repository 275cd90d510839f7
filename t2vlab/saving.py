"""A pipeline written as one folder in the published layout, which t2vlab and diffusers both load.

    pipe.save_pretrained("my-video-model")                       # float32 weights, safetensors
    pipe.to(torch.float16).save_pretrained("my-video-model", variant="fp16")   # + the fp16 variant beside them

The folder (see ``t2vlab.checkpoint`` for the files)::

    model_index.json            which library and class each component folder holds ([null, null]: absent)
    unet/ vae/ text_encoder/    config.json + weights[.variant].safetensors (or .bin with safe_serialization=False)
    tokenizer/ scheduler/       the tokenizer's files, scheduler_config.json (the pipeline's own sampler)

What is saved is what runs: a LoRA fused into the UNet (``fuse_lora``) is written inside its weights and its
adapters' own tensors are left out; an adapter that acts unfused is refused (fuse it, unload it, or save it alone
with ``save_lora_weights``). A pipeline loaded from the original ModelScope layout is written in the published
one, its tokenizer as the published folders have it (the same ids, padding with "!" = id 0). ``variant`` only names
the files, as in diffusers ("fp16": cast the pipeline with ``pipe.to(torch.float16)`` first).

A new folder appears whole or not at all; saving into an existing folder (a second variant, say) replaces the files
this save writes, one whole file at a time, and leaves every other file as it was (``t2vlab.atomic.atomic_merge``).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import configs
from .atomic import atomic_merge
from .lora import LoRAError, lora_layers
from .tokenizer import Tokenizer
from .weights import MODELS

# model_index.json's entry for each component: the library and class that diffusers builds it with
LIBRARIES = {"unet": ("diffusers", "UNet3DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
             "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer")}


def model_index(reference_class, components) -> dict:
    """model_index.json: diffusers' pipeline class, its version, and [library, class] per component
    ([null, null] for one that is None); the scheduler's class is the pipeline's own sampler's."""
    index = {"_class_name": reference_class, "_diffusers_version": configs.MODEL_INDEX["_diffusers_version"]}
    for name in sorted(components):
        part = components[name]
        if part is None:
            index[name] = [None, None]
        else:
            index[name] = list(LIBRARIES.get(name, ("diffusers", type(part).__name__)))
    return index


def plain_state_dict(model, name) -> dict:
    """``model``'s tensors under the checkpoint's names: a fused LoRA is inside the weights, its adapters' own
    tensors (``lora_A``/``lora_B``) left out. An adapter that acts without being fused is refused (LoRAError)."""
    layers = lora_layers(model)
    unfused = sorted({n for layer in layers.values() if layer.unfused_weight is None for n in layer.active})
    if unfused:
        raise LoRAError(f"save_pretrained: the {name} has LoRA adapters that act unfused ({', '.join(unfused)}); "
                        f"call pipe.fuse_lora() to write them into the weights, or pipe.unload_lora_weights() to "
                        f"save the plain model (pipe.save_lora_weights() saves an adapter alone)")
    adapters = tuple(f"{path}.{part}." for path in layers for part in ("lora_A", "lora_B"))
    return {k: v for k, v in model.state_dict().items() if not k.startswith(adapters)}


def published_tokenizer(tokenizer):
    """The tokenizer as a published folder holds it: OpenCLIP's way of padding (the original layout's) is written
    as the published folders write it, with the same vocabulary and pad id 0."""
    return Tokenizer.default(tokenizer.max_length) if tokenizer.pad_id is not None else tokenizer


def save_pipeline(components, folder, reference_class="TextToVideoSDPipeline", variant=None,
                  safe_serialization=True) -> Path:
    """Write ``components`` ({"unet", "vae", "text_encoder", "tokenizer", "scheduler"}, None for one that is
    absent) to ``folder`` in the published layout (see the module docstring); return it as a Path."""
    folder = Path(folder)
    states = {name: plain_state_dict(components[name], name) for name in MODELS if components[name] is not None}
    with atomic_merge(folder) as tmp:
        for name, state in states.items():
            components[name].save_pretrained(tmp / name, variant, safe_serialization, state_dict=state)
        if components["tokenizer"] is not None:
            published_tokenizer(components["tokenizer"]).save_pretrained(tmp / "tokenizer")
        components["scheduler"].save_pretrained(tmp / "scheduler")
        index = model_index(reference_class, components)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder
