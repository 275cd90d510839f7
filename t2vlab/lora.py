"""LoRA: low-rank adapters on a model's linear layers (Hu et al., 2021).

A linear layer y = W x + b learns a correction of rank r instead of a new W:

    y = W x + b + s * (alpha / r) * B (A x)        A (r, in), B (out, r), r << min(in, out)

B starts at zero, so a fresh adapter changes nothing; only A and B (a few MB for the whole UNet) are
trained. ``s`` is the user's weight for the adapter (``set_scale``), 1 by default. Several adapters
may sit on one layer; their corrections add.

- ``LoRALinear``     an ``nn.Linear`` that also holds adapters (``lora_A.<name>``, ``lora_B.<name>``); it keeps
                     the layer's own ``weight`` and ``bias`` (same parameters, same names), so the base
                     checkpoint still loads into it. ``fuse`` folds the corrections into W; ``unfuse`` puts
                     back the W it saved, bit for bit.
- ``lora_targets``   the module paths to adapt: spatial attention, temporal attention, feed-forwards.
- ``add_lora`` / ``remove_lora``   put adapters on layers by module path / take them all off again.
- the file: diffusers' ``pytorch_lora_weights.safetensors`` (what its ``save_lora_weights`` writes from
  peft's ``get_peft_model_state_dict``): keys ``unet.<module path>.lora_A.weight`` / ``.lora_B.weight``,
  the adapter's settings (``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``) as JSON in the
  safetensors metadata under ``lora_adapter_metadata`` with the same ``unet.`` prefix. Reading also takes
  the older diffusers names (``.lora.down``/``.lora.up``, ``.lora_linear_layer.down``/``.up``) and
  kohya-style ``.alpha`` scalars; without any alpha, alpha = r (scale 1), as diffusers assumes.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_file
from .checks import one_of, positive_int

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
TRAIN_CHOICES = ("spatial", "temporal", "both")
# (A suffix, B suffix) of every key format read; the first is the one written
KEY_FORMATS = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
               (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))


class LoRAError(ValueError):
    """A LoRA file or setting that does not fit this model, naming the key, layer or argument."""


# ------------------------------------------------------------------------------------- the layer
class LoRALinear(nn.Linear):
    """``nn.Linear`` plus adapters: y = W x + b + sum over active adapters of s * (alpha / r) * B A x."""

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the base layer's own parameters, not copies
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.scaling = {}  # name -> alpha / r
        self.scale = {}  # name -> the user's weight s
        self.active = []  # names of the adapters that act
        self.frozen = set()  # active adapters that act but learn nothing (no gradient flows into them)
        self.unfused_weight = None  # W before fuse(), restored exactly by unfuse()

    def add_adapter(self, name, rank, alpha=None, use_rslora=False):
        """A new adapter: A (rank, in) drawn as nn.Linear draws weights, B (out, rank) zeros."""
        positive_int("LoRA rank", rank, high=min(self.in_features, self.out_features), error=LoRAError,
                     hint=f" (at most the layer's width min({self.in_features}, {self.out_features}))")
        alpha = rank if alpha is None else alpha
        kw = dict(bias=False, device=self.weight.device, dtype=self.weight.dtype)
        self.lora_A[name] = nn.Linear(self.in_features, rank, **kw)
        self.lora_B[name] = nn.Linear(rank, self.out_features, **kw)
        nn.init.zeros_(self.lora_B[name].weight)
        self.scaling[name] = alpha / (math.sqrt(rank) if use_rslora else rank)
        self.scale[name] = 1.0
        if name not in self.active:
            self.active.append(name)

    def delta(self, name):
        """The adapter's correction to W, s * (alpha / r) * B A: (out, in)."""
        return (self.lora_B[name].weight @ self.lora_A[name].weight) * (self.scaling[name] * self.scale[name])

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.unfused_weight is not None:  # fused: the corrections are inside W already
            return y
        for name in self.active:
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            if name in self.frozen:
                a, b = a.detach(), b.detach()
            y = y + F.linear(F.linear(x, a), b) * (self.scaling[name] * self.scale[name])
        return y

    def fuse(self):
        """Fold the active adapters into W (faster: one matmul); W's old value is kept for ``unfuse``."""
        if self.unfused_weight is None and self.active:
            self.unfused_weight = self.weight.data.clone()
            with torch.no_grad():
                self.weight += sum(self.delta(n) for n in self.active).to(self.weight.dtype)

    def unfuse(self):
        if self.unfused_weight is not None:
            self.weight.data.copy_(self.unfused_weight)
            self.unfused_weight = None

    def remove_adapter(self, name):
        self.unfuse()
        del self.lora_A[name], self.lora_B[name], self.scaling[name], self.scale[name]
        self.frozen.discard(name)
        self.active = [n for n in self.active if n != name]

    def plain(self) -> nn.Linear:
        """The base layer again, with its own (unfused) parameters."""
        self.unfuse()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self):
        ranks = {n: a.out_features for n, a in self.lora_A.items()}
        return f"{super().extra_repr()}, adapters={ranks}, active={self.active}"


# ------------------------------------------------------------------------------------ which layers
def lora_targets(model, train="both", feed_forward=False) -> list[str]:
    """Module paths of the attention projections (to_q, to_k, to_v, to_out.0) to adapt.

    ``train``: "spatial" (attention within a frame and to the text: ``attentions.*``), "temporal"
    (attention across frames: ``temp_attentions.*`` and ``transformer_in``) or "both";
    ``feed_forward``: also the feed-forwards of those transformers (ff.net.0.proj, ff.net.2).
    """
    one_of("train", train, TRAIN_CHOICES, error=LoRAError)
    leaves = ATTENTION_PROJECTIONS + (FEED_FORWARD if feed_forward else ())
    paths = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear) or ".transformer_blocks." not in path:
            continue
        if not any(path.endswith("." + leaf) for leaf in leaves):
            continue
        temporal = ".temp_attentions." in path or path.startswith("transformer_in.")
        if train == "both" or (train == "temporal") == temporal:
            paths.append(path)
    return paths


def lora_layers(model) -> dict[str, LoRALinear]:
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALinear)}


def _replace(model, path, new):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def add_lora(model, paths, rank=16, alpha=None, adapter_name="default", use_rslora=False) -> list[nn.Parameter]:
    """Put an adapter named ``adapter_name`` on each linear layer in ``paths``; returns its parameters
    (the ones to train). ``rank`` and ``alpha``: one number, or {path: number} for each layer."""
    params = []
    for path in paths:
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise LoRAError(f"no layer {path!r} in this {type(model).__name__}") from None
        if not isinstance(layer, nn.Linear):
            raise LoRAError(f"layer {path!r} is a {type(layer).__name__}; LoRA adapts nn.Linear layers only")
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer)
            _replace(model, path, layer)
        if adapter_name in layer.lora_A:
            raise LoRAError(f"layer {path!r} already has an adapter named {adapter_name!r}")
        r = rank[path] if isinstance(rank, dict) else rank
        a = alpha.get(path) if isinstance(alpha, dict) else alpha
        try:
            layer.add_adapter(adapter_name, r, a, use_rslora)
        except LoRAError as e:
            raise LoRAError(f"layer {path!r}: {e}") from None
        params += [layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight]
    return params


def adapter_names(model) -> list[str]:
    return list(dict.fromkeys(n for layer in lora_layers(model).values() for n in layer.lora_A))


def remove_lora(model, adapter_name=None):
    """Take the adapter ``adapter_name`` (None: every adapter) off; a layer left without adapters becomes
    its plain nn.Linear again, with its base weights exactly as they were."""
    for path, layer in lora_layers(model).items():
        for name in [adapter_name] if adapter_name is not None else list(layer.lora_A):
            if name in layer.lora_A:
                layer.remove_adapter(name)
        if not layer.lora_A:
            _replace(model, path, layer.plain())


def set_active(model, names, weights=None):
    """Only ``names`` act, each with weight ``weights[i]`` (default 1)."""
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names):
        raise LoRAError(f"{len(names)} adapter names but {len(weights)} weights")
    known = adapter_names(model)
    for n in names:
        if n not in known:
            raise LoRAError(f"no adapter named {n!r}; loaded: {known}")
    for layer in lora_layers(model).values():
        layer.unfuse()
        layer.active = [n for n in names if n in layer.lora_A]
        for n, w in zip(names, weights):
            if n in layer.scale:
                layer.scale[n] = float(w)


def set_frozen(model, names):
    """The adapters ``names`` still act (when active) but are detached: no gradient reaches them."""
    for layer in lora_layers(model).values():
        layer.frozen = {n for n in names if n in layer.lora_A}


# ------------------------------------------------------------------------------------- the file
def lora_state_dict(model, adapter_name="default") -> dict[str, torch.Tensor]:
    """{"<path>.lora_A.weight": A, "<path>.lora_B.weight": B} of one adapter (peft's key names)."""
    out = {}
    for path, layer in lora_layers(model).items():
        if adapter_name in layer.lora_A:
            out[f"{path}.lora_A.weight"] = layer.lora_A[adapter_name].weight.detach()
            out[f"{path}.lora_B.weight"] = layer.lora_B[adapter_name].weight.detach()
    if not out:
        raise LoRAError(f"no adapter named {adapter_name!r}; loaded: {adapter_names(model)}")
    return out


def adapter_config(model, adapter_name="default") -> dict:
    """The adapter's settings in peft's LoraConfig terms: the commonest rank and alpha as ``r`` and
    ``lora_alpha``, the layers that differ in ``rank_pattern`` / ``alpha_pattern`` (full paths)."""
    ranks, alphas = {}, {}
    for path, layer in lora_layers(model).items():
        if adapter_name in layer.lora_A:
            ranks[path] = layer.lora_A[adapter_name].out_features
            alphas[path] = layer.scaling[adapter_name] * ranks[path]
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {"r": r, "lora_alpha": alpha, "target_modules": sorted(ranks),
            "rank_pattern": {p: v for p, v in ranks.items() if v != r},
            "alpha_pattern": {p: v for p, v in alphas.items() if v != alpha}}


def save_lora_file(path, tensors, config, prefix="unet"):
    """Write ``tensors`` (peft names) and ``config`` in diffusers' file format, atomically."""
    path = Path(path)
    state = {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt", METADATA_KEY: json.dumps({f"{prefix}.{k}": v for k, v in config.items()},
                                                        indent=2, sort_keys=True)}
    with atomic_file(path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata=metadata)
    return path


def read_lora_file(path_or_folder, weight_name=None, prefix="unet"):
    """(tensors {key without prefix: tensor}, config {peft setting: value} or {}) from a file or a folder
    holding ``pytorch_lora_weights.safetensors`` (or ``weight_name``)."""
    path = Path(path_or_folder)
    if path.is_dir():
        path = path / (weight_name or LORA_WEIGHT_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        raise LoRAError(f"{path}: only .safetensors LoRA files are read (no pickles)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        config = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
    except (safetensors.SafetensorError, json.JSONDecodeError, OSError) as e:
        raise LoRAError(f"{path}: not a readable LoRA safetensors file ({e})") from None
    return strip_prefix(tensors, prefix, path), strip_prefix(config, prefix, path, check=False)


def strip_prefix(d, prefix, source="", check=True):
    """Keys under ``prefix.`` lose it; with no key under any component prefix, keys are taken as they are."""
    if not any(k.startswith(prefix + ".") for k in d):
        other = sorted(k for k in d if k.split(".")[0] in ("text_encoder", "text_encoder_2", "transformer"))
        if check and other:
            raise LoRAError(f"{source}: key {other[0]!r} is for another model; this LoRA holds nothing for the "
                            f"{prefix}")
        return dict(d)
    if check:
        for k in d:
            if not k.startswith(prefix + "."):
                raise LoRAError(f"{source}: key {k!r} is not for the {prefix} (only {prefix}.* LoRA layers are read)")
    return {k[len(prefix) + 1:]: v for k, v in d.items() if k.startswith(prefix + ".")}


def pattern_value(patterns, path, default):
    """peft's rule: a pattern applies to the layers whose path ends with it (after a dot)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def split_pairs(tensors, source=""):
    """{module path: (A, B, alpha or None)} from peft-, diffusers- or kohya-named keys."""
    pairs, alphas = {}, {}
    for key, value in tensors.items():
        if key.endswith(".alpha"):
            alphas[key[:-len(".alpha")]] = float(value)
            continue
        for i, suffix in ((i, s) for fmt in KEY_FORMATS for i, s in enumerate(fmt)):
            if key.endswith(suffix):
                pairs.setdefault(key[:-len(suffix)], [None, None])[i] = (key, value)
                break
        else:
            raise LoRAError(f"{source}: key {key!r} is not a LoRA weight (expected <layer>.lora_A.weight / "
                            f".lora_B.weight)")
    out = {}
    for path, (a, b) in pairs.items():
        if a is None or b is None:
            raise LoRAError(f"{source}: key {(a or b)[0]!r} has no {'lora_B' if b is None else 'lora_A'} partner")
        out[path] = (a, b, alphas.get(path))
    return out


def load_lora(model, tensors, config=None, adapter_name="default", source="LoRA"):
    """Add adapter ``adapter_name`` to ``model`` from file tensors (peft names, prefix stripped).

    Every key is checked before the model changes: a key naming no linear layer, or shapes that do not
    fit the layer, is a LoRAError naming the key."""
    config = config or {}
    if config.get("use_dora"):
        raise LoRAError(f"{source}: DoRA adapters (use_dora) are not supported")
    pairs = split_pairs(tensors, source)
    if not pairs:
        raise LoRAError(f"{source}: holds no LoRA weights")
    ranks, alphas = {}, {}
    for path, ((ka, a), (kb, b), alpha) in pairs.items():
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise LoRAError(f"{source}: key {ka!r} names no layer of this {type(model).__name__} (no module "
                            f"{path!r}); is the LoRA for another architecture?") from None
        if not isinstance(layer, nn.Linear):
            raise LoRAError(f"{source}: key {ka!r} names a {type(layer).__name__}; only nn.Linear layers take LoRA")
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != layer.in_features or b.shape != (layer.out_features, r):
            raise LoRAError(f"{source}: keys {ka!r} {tuple(a.shape)} and {kb!r} {tuple(b.shape)} do not fit layer "
                            f"{path!r} ({layer.in_features} in, {layer.out_features} out); expected "
                            f"(r, {layer.in_features}) and ({layer.out_features}, r)")
        ranks[path] = r
        default_alpha = alpha if alpha is not None else config.get("lora_alpha", r)
        alphas[path] = pattern_value(config.get("alpha_pattern"), path, default_alpha)
    add_lora(model, list(pairs), ranks, alphas, adapter_name, use_rslora=bool(config.get("use_rslora")))
    layers = lora_layers(model)
    with torch.no_grad():
        for path, ((_, a), (_, b), _) in pairs.items():
            layers[path].lora_A[adapter_name].weight.copy_(a)
            layers[path].lora_B[adapter_name].weight.copy_(b)
    return list(pairs)
