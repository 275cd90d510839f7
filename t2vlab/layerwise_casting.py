"""Layerwise casting: weights kept in a narrow dtype, each layer cast up only while it runs.

A 1.4 B-parameter UNet holds 2.8 GB of float16 weights, but one layer at a time is all a forward pass
reads. So keep every layer's weights in a storage dtype of 8 bits (float8 e4m3: sign, 4 exponent bits,
3 mantissa bits) and, around each layer's forward,

    before:  W <- W.to(compute_dtype)        (a forward pre-hook)
    forward: y = layer(x)                    (float16 / bfloat16 / float32 arithmetic, as usual)
    after:   W <- W.to(storage_dtype)        (a forward hook)

Every float8 value is exactly a float16/bfloat16/float32 value, so the round trip after -> before gives back
the same bits: the weights are rounded once, when casting is switched on, never again. The memory is
then one byte per cast weight plus one layer in the compute dtype; the cost is two casts per layer per call.

Which layers (diffusers 0.42.1's rules, ``hooks/layerwise_casting.py``): walking from the model down, a
module whose dotted name matches one of ``skip_modules_pattern`` (``re.search``) or whose class is in
``skip_modules_classes`` is left as it is, with everything under it; the weight layers, convolutions, linear
layers and embeddings (``CAST_LAYERS``), are cast; any other module is walked into. Norms are not in
``CAST_LAYERS`` (diffusers leaves them out too): their few weights scale every activation, and rounding them
costs quality for no memory worth having. The default patterns skip norms and embeddings: diffusers' defaults
are ``pos_embed``, ``patch_embed``, ``norm``, ``^proj_in$``, ``^proj_out$`` and its UNet3DConditionModel adds
``norm`` and ``time_embedding``; we write the embeddings as one pattern, ``embed`` (which covers those three
and the text encoder's token and position embeddings). ``^proj_in$`` / ``^proj_out$`` are top-level names only
(a transformer's inner ``proj_in`` is cast), as in diffusers.

Only a layer's own tensors are cast (``recurse=False``), floating ones only (an index buffer stays an
integer), persistent or not, as ``module.to(dtype)`` does for the layers diffusers hooks (which have no
buffers). A LoRA layer (``t2vlab.lora.LoRALinear``, an ``nn.Linear``) is cast as its base layer: its own
``weight`` and ``bias`` are stored low, its adapters (``lora_A``/``lora_B``, a few MB for the whole UNet) stay
in the dtype they have, the compute dtype, so the low-rank correction is not rounded to 8 bits (diffusers
skips peft's adapter layers by default for the same reason). Add, fuse and unfuse adapters before switching
casting on (or after switching it off): they write the layer's weight, which is in storage dtype at rest.

``disable_layerwise_casting`` takes the hooks off and casts each tensor back to the dtype it had: the dtype
is restored, the values keep the storage rounding (reload the weights for the exact ones; diffusers offers
no disable for this reason). While casting is on, ``model.dtype`` of a ``ModelBase`` is the compute dtype,
as in diffusers, so that inputs the model makes for itself (the timestep features) are in the compute dtype.
For inference: after a layer's forward its weight is back in the storage dtype, which a backward pass would meet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .checks import boolean, float_dtype

CAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.Linear, nn.Embedding)  # LoRALinear is an nn.Linear
DEFAULT_SKIP_MODULES_PATTERN = ("embed", "norm", "^proj_in$", "^proj_out$")


class LayerwiseCastingError(ValueError):
    """Layerwise casting cannot be switched as asked (already on, off, or under group offloading)."""


@dataclass
class LayerwiseCasting:
    """What ``enable_layerwise_casting`` did to a model: the cast layers, their tensors' dtypes before, the hooks."""

    storage_dtype: torch.dtype
    compute_dtype: torch.dtype
    layers: dict = field(default_factory=dict)  # dotted name -> layer
    original: dict = field(default_factory=dict)  # (dotted name, tensor name) -> dtype before enabling
    handles: list = field(default_factory=list)


def own_float_tensors(layer: nn.Module):
    """(name, tensor) of the layer's own floating-point parameters and buffers (not its children's)."""
    for name, t in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
        if t is not None and t.is_floating_point():
            yield name, t


def cast_layer(layer: nn.Module, dtype, non_blocking=False):
    """Cast the layer's own floating tensors to ``dtype`` in place (the parameters stay the same objects)."""
    for _, t in own_float_tensors(layer):
        if t.dtype != dtype:
            t.data = t.data.to(dtype, non_blocking=non_blocking)


def layers_to_cast(module: nn.Module, skip_modules_pattern, skip_modules_classes, prefix=""):
    """Yield (dotted name, layer) of the weight layers to cast, walking down and stopping at skipped modules."""
    if (skip_modules_classes and isinstance(module, skip_modules_classes)) or \
            any(re.search(p, prefix) for p in skip_modules_pattern):
        return
    if isinstance(module, CAST_LAYERS):
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from layers_to_cast(child, skip_modules_pattern, skip_modules_classes, f"{prefix}.{name}" if prefix
                                  else name)


def round_trips(storage, compute) -> bool:
    """Is every value of ``storage`` exactly a value of ``compute``? (range, precision and smallest normal)"""
    s, c = torch.finfo(storage), torch.finfo(compute)
    return c.max >= s.max and c.eps <= s.eps and c.smallest_normal <= s.smallest_normal


def enable_layerwise_casting(model: nn.Module, storage_dtype=torch.float8_e4m3fn, compute_dtype=None,
                             skip_modules_pattern=None, skip_modules_classes=None, non_blocking=False):
    """Store the weight layers of ``model`` in ``storage_dtype``, each cast to ``compute_dtype`` for its forward.

    ``compute_dtype``: None means the model's dtype now (diffusers' default); the layers left as they are
    (norms, embeddings) must already be in it. ``skip_modules_pattern``: regular expressions searched in the
    dotted module names, None for ``DEFAULT_SKIP_MODULES_PATTERN``, ``()`` to skip by class only.
    Returns the ``LayerwiseCasting`` record (also kept as ``model._layerwise_casting``).
    """
    check_can_enable(model)
    float_dtype("storage_dtype", storage_dtype)
    params = [p for p in model.parameters() if p.is_floating_point()]
    compute_dtype = float_dtype("compute_dtype", compute_dtype if compute_dtype is not None else
                                (params[0].dtype if params else torch.float32))
    boolean("non_blocking", non_blocking)
    if not round_trips(storage_dtype, compute_dtype):
        raise ValueError(f"storage_dtype={storage_dtype} has values that compute_dtype={compute_dtype} cannot hold "
                         "exactly, so every call would round the weights again; store in a narrower dtype "
                         "(torch.float8_e4m3fn) or compute in a wider one")
    patterns = DEFAULT_SKIP_MODULES_PATTERN if skip_modules_pattern is None else skip_modules_pattern
    patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    classes = tuple(skip_modules_classes) if skip_modules_classes else ()
    for p in patterns:
        try:
            re.compile(p)
        except (TypeError, re.error):
            raise ValueError(f"skip_modules_pattern must be regular expressions (strings), got {p!r:.80}") from None

    record = LayerwiseCasting(storage_dtype, compute_dtype)
    record.layers = dict(layers_to_cast(model, patterns, classes))
    cast = {id(t) for layer in record.layers.values() for _, t in own_float_tensors(layer)}
    kept = sorted({t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()
                   and id(t) not in cast and t.dtype != compute_dtype}, key=str)
    if kept:
        raise ValueError(f"compute_dtype={compute_dtype}, but the tensors that stay as they are (norms, embeddings, "
                         f"LoRA adapters) "
                         f"are in {', '.join(map(str, kept))}: load the model in the compute dtype first "
                         f"(model.to({compute_dtype})) or pass compute_dtype={kept[0]}")

    def up(layer, args):  # before the layer's forward
        cast_layer(layer, record.compute_dtype, non_blocking)

    def down(layer, args, output):  # after it
        cast_layer(layer, record.storage_dtype, non_blocking)

    for name, layer in record.layers.items():
        for tensor_name, t in own_float_tensors(layer):
            record.original[name, tensor_name] = t.dtype
        cast_layer(layer, storage_dtype, non_blocking)
        # innermost: the cast up runs after any other pre-hook (group offloading's onload), the cast down first
        record.handles += [layer.register_forward_pre_hook(up), layer.register_forward_hook(down, prepend=True,
                                                                                        always_call=True)]
    model._layerwise_casting = record
    return record


def disable_layerwise_casting(model: nn.Module):
    """Take the hooks off and give every cast tensor its dtype back (values keep the storage rounding)."""
    record = getattr(model, "_layerwise_casting", None)
    if record is None:
        return
    if getattr(model, "_group_offload", None) is not None:
        raise LayerwiseCastingError("group offloading is on: disable_group_offload() first, then layerwise casting")
    for h in record.handles:
        h.remove()
    for (name, tensor_name), dtype in record.original.items():
        t = getattr(record.layers[name], tensor_name)
        t.data = t.data.to(dtype)
    model._layerwise_casting = None


def check_can_enable(model):
    if getattr(model, "_layerwise_casting", None) is not None:
        raise LayerwiseCastingError("layerwise casting is already on: disable_layerwise_casting() first")
    if getattr(model, "_group_offload", None) is not None:
        raise LayerwiseCastingError("group offloading is on: enable layerwise casting first, then group offloading "
                                    "(its copies and files then hold the weights in the storage dtype)")


def compute_dtype(model: nn.Module):
    """The dtype ``model`` computes in while layerwise casting is on, else None."""
    record = getattr(model, "_layerwise_casting", None)
    return None if record is None else record.compute_dtype


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers at rest (shapes and dtypes only: works on the meta device)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
