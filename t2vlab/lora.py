"""LoRA: low-rank adapters on a model's weight layers (Hu et al., 2021).

A layer y = W x + b learns a correction of rank r instead of a new W:

    y = W x + b + s * (alpha / r) * B (A x)        A (r, in), B (out, r), r << min(in, out)

B starts at zero, so a fresh adapter changes nothing; only A and B (a few MB for the whole UNet) are
trained. ``s`` is the user's weight for the adapter (``set_active``), 1 by default. Several adapters
may sit on one layer; their corrections add. With rsLoRA (``use_rslora``) the scale is alpha / sqrt(r).

- ``LoRALinear``   an ``nn.Linear`` (attention projections, feed-forwards, the ResNet blocks' ``time_emb_proj``)
                   that also holds adapters (``lora_A.<name>``, ``lora_B.<name>``);
- ``LoRAConv``     the same on a convolution (``LoRAConv2d``: the ResNet blocks' ``conv1``/``conv2``/``conv_shortcut``,
                   the down/up-samplers; ``LoRAConv3d``: the temporal convolutions), in peft's form: A is a
                   convolution with the layer's own kernel, stride, padding and dilation, B a 1x1 convolution.
  Both (``LoRALayer``) keep the layer's own ``weight`` and ``bias`` (same parameters, same names), so the base
  checkpoint still loads into them; ``fuse`` folds the corrections into W, ``unfuse`` puts back the W it saved,
  bit for bit; ``plain`` gives back the very layer that was adapted.
- ``lora_targets`` / ``list_layers``   the module paths to adapt / every weight layer in T2V-Turbo's order.
- ``add_lora`` / ``remove_lora`` / ``load_lora``   put adapters on layers by module path (new, or from a file's
  tensors: ``t2vlab.lora_files`` reads the formats) / take them off again.

Loading is a transaction: every key, shape, value (NaN and infinity refused) and setting is checked before the
model changes, and anything that fails on the way, an interrupt included, takes the new adapter off again, so
the model is exactly as it was (its layers, their weights and the other adapters).

Fusing (``fuse_adapters``; the pipeline's ``fuse_lora``) folds adapters into the weights, W <- W + sum of their
corrections x ``lora_scale``, so that a step costs one matmul per layer again. Its rules:

- what is folded: the active adapters (or the ones named, which then are the active ones), each at its weight s
  times ``lora_scale``. ``lora_scale`` belongs to that fusion only: the adapters' weights do not change, so after
  ``unfuse`` they act at s again.
- fusing again first restores W, then folds afresh: ``fuse(0.5)`` twice is ``fuse(0.5)`` once (never 0.25).
- ``unfuse`` puts back the W saved when fusing, bit for bit.
- an adapter added while others are fused acts on top of them, unfused; the fused ones stay inside W.
- choosing or weighting adapters (``set_active``), disabling them, or removing a fused one first undoes the
  fusion (W restored exactly); fuse again afterwards if wanted.
- disabling (``enable_adapters(model, False)``) stops every adapter acting but keeps which are active and their
  weights; enabling brings both back.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .checks import number, one_of, positive_int
from .lora_files import (
    KEY_FORMATS,
    LORA_WEIGHT_NAME,
    METADATA_KEY,
    LoRAError,
    LoRASettings,
    Pair,
    lora_settings,
    read_lora_file,
    save_lora_file,
    split_pairs,
    strip_prefix,
)

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
TRAIN_CHOICES = ("spatial", "temporal", "both")
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)  # the layers an adapter goes on

__all__ = ["ATTENTION_PROJECTIONS", "FEED_FORWARD", "KEY_FORMATS", "LORA_WEIGHT_NAME", "METADATA_KEY", "TRAIN_CHOICES",
           "WEIGHT_LAYERS", "LoRAConv", "LoRAConv2d", "LoRAConv3d", "LoRAError", "LoRALayer", "LoRALinear",
           "LoRASettings", "active_adapters", "adapter_config", "adapter_names", "adapter_weight", "add_lora",
           "enable_adapters", "fuse_adapters", "list_layers", "list_pairs", "load_lora", "lora_enabled",
           "lora_layers", "lora_settings", "lora_state_dict", "lora_targets", "read_lora_file", "remove_lora",
           "save_lora_file", "set_active", "set_frozen", "split_pairs", "strip_prefix", "unfuse_adapters"]


# ------------------------------------------------------------------------------------- the layers
class LoRALayer:
    """What every adapted layer shares (mixed in before the torch layer class):

        y = base(x; W, b) + sum over the active adapters n not fused of  s_n (alpha_n / r_n) B_n(A_n(x))
        delta W_n = s_n (alpha_n / r_n) B_n A_n      (B and A flattened to matrices; reshaped to W's shape)

    A subclass says how its kind of layer is computed (``base_forward``), what A and B are (``new_pair``) and
    how they act on x (``low_rank``)."""

    plain_class = None  # the torch layer class adapted
    geometry = ()  # the attributes that describe the layer besides its tensors

    def __init__(self, base):
        nn.Module.__init__(self)
        for name in self.geometry:
            setattr(self, name, getattr(base, name))
        self.weight, self.bias = base.weight, base.bias  # the base layer's own parameters, not copies
        self.__dict__["base_layer"] = base  # kept unregistered (not a submodule: no second copy in the state dict)
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.scaling = {}  # name -> alpha / r (alpha / sqrt(r) with rsLoRA)
        self.alpha = {}  # name -> alpha
        self.rslora = set()  # the adapters scaled by alpha / sqrt(r)
        self.scale = {}  # name -> the user's weight s
        self.active = []  # names of the adapters that act
        self.frozen = set()  # active adapters that act but learn nothing (no gradient flows into them)
        self.enabled = True  # False: no adapter acts (disabled), which are active and their weights kept
        self.fused = []  # the adapters folded into W by fuse(): they act from inside W
        self.unfused_weight = None  # W before fuse(), restored exactly by unfuse()

    def add_adapter(self, name, rank, alpha=None, use_rslora=False):
        """A new adapter: A drawn as its layer class draws weights, B zeros (so it changes nothing yet)."""
        check_rank(self, rank)
        alpha = rank if alpha is None else alpha
        self.lora_A[name], self.lora_B[name] = self.new_pair(rank)
        nn.init.zeros_(self.lora_B[name].weight)
        self.scaling[name] = alpha / (math.sqrt(rank) if use_rslora else rank)
        self.alpha[name] = alpha
        if use_rslora:
            self.rslora.add(name)
        self.scale[name] = 1.0
        if name not in self.active:
            self.active.append(name)

    def delta(self, name):
        """The adapter's correction to W, s (alpha / r) B A, in W's shape: (out, in) or (out, in, *kernel)."""
        b, a = self.lora_B[name].weight, self.lora_A[name].weight
        return (b.flatten(1) @ a.flatten(1)).reshape(self.weight.shape) * (self.scaling[name] * self.scale[name])

    def forward(self, x):
        y = self.base_forward(x, self.weight, self.bias)
        if not self.enabled:
            return y
        for name in self.active:
            if name in self.fused:  # inside W already
                continue
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            if name in self.frozen:
                a, b = a.detach(), b.detach()
            y = y + self.low_rank(x, a, b) * (self.scaling[name] * self.scale[name])
        return y

    def fuse(self, scale=1.0):
        """Fold the active adapters, times ``scale``, into W (then one matmul per step); W's value before is kept
        for ``unfuse``. Fusing again starts from that W: the last fusion is the one that holds."""
        self.unfuse()
        if not (self.enabled and self.active):
            return
        self.unfused_weight = self.weight.data.clone()
        with torch.no_grad():
            self.weight += (sum(self.delta(n) for n in self.active) * scale).to(self.weight.dtype)
        self.fused = list(self.active)

    def unfuse(self):
        if self.unfused_weight is not None:
            self.weight.data.copy_(self.unfused_weight)
            self.unfused_weight = None
        self.fused = []

    def remove_adapter(self, name):
        if name in self.fused:
            self.unfuse()
        del self.lora_A[name], self.lora_B[name], self.scaling[name], self.alpha[name], self.scale[name]
        self.rslora.discard(name)
        self.frozen.discard(name)
        self.active = [n for n in self.active if n != name]

    def plain(self) -> nn.Module:
        """The layer that was adapted (the same module), with its own unfused parameters."""
        self.unfuse()
        base = self.base_layer
        base.weight, base.bias = self.weight, self.bias
        return base

    def extra_repr(self):
        ranks = {n: a.weight.shape[0] for n, a in self.lora_A.items()}
        return f"{super().extra_repr()}, adapters={ranks}, active={self.active}"


class LoRALinear(LoRALayer, nn.Linear):
    """``nn.Linear`` plus adapters: y = W x + b + sum s (alpha / r) B A x,  A (r, in), B (out, r)."""

    plain_class, geometry = nn.Linear, ("in_features", "out_features")

    def new_pair(self, rank):
        kw = dict(bias=False, device=self.weight.device, dtype=self.weight.dtype)
        return nn.Linear(self.in_features, rank, **kw), nn.Linear(rank, self.out_features, **kw)

    def base_forward(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def low_rank(self, x, a, b):
        return F.linear(F.linear(x, a), b)


class LoRAConv(LoRALayer):
    """A convolution plus adapters, in peft's form: A is a convolution with the layer's own kernel, stride,
    padding and dilation from its channels to r, B a 1x1 convolution from r to its channels. Both are linear,
    so together they are one convolution with the layer's geometry, which is what fusing folds into W:

        y = conv(x; W) + b + s (alpha / r) conv_1x1(conv(x; A); B)
        delta W = s (alpha / r) (B (out, r) @ A (r, in * prod(kernel))) reshaped to (out, in, *kernel)

    (peft's A takes the layer's kernel, stride and padding but not its dilation, so on a dilated layer its
    unfused output differs from its fused one; here A takes the dilation too. The UNet's layers have none.)"""

    geometry = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice")

    def new_pair(self, rank):
        kw = dict(bias=False, device=self.weight.device, dtype=self.weight.dtype)
        a = self.plain_class(self.in_channels, rank, self.kernel_size, self.stride, self.padding, self.dilation,
                             padding_mode=self.padding_mode, **kw)
        return a, self.plain_class(rank, self.out_channels, 1, **kw)

    def base_forward(self, x, weight, bias):
        return self._conv_forward(x, weight, bias)

    def low_rank(self, x, a, b):
        h = self._conv_forward(x, a, None)  # A with the layer's own stride, padding, dilation and padding mode
        return (F.conv2d if b.ndim == 4 else F.conv3d)(h, b)  # B: 1x1 (x1)


class LoRAConv2d(LoRAConv, nn.Conv2d):
    """``nn.Conv2d`` plus adapters (``LoRAConv``)."""

    plain_class = nn.Conv2d


class LoRAConv3d(LoRAConv, nn.Conv3d):
    """``nn.Conv3d`` plus adapters (``LoRAConv``): the temporal convolutions, kernel (3, 1, 1) over the frames."""

    plain_class = nn.Conv3d


LORA_CLASSES = (LoRALinear, LoRAConv2d, LoRAConv3d)


def check_rank(layer, rank, what="LoRA rank"):
    """A rank from 1 to the rank of the layer's weight as a matrix, min(out, in * prod(kernel))."""
    fan_in, fan_out = math.prod(layer.weight.shape[1:]), layer.weight.shape[0]
    return positive_int(what, rank, high=min(fan_in, fan_out), error=LoRAError,
                        hint=f" (at most the layer's width min({fan_in}, {fan_out}))")


def pair_shapes(layer, r):
    """The shapes of A and B of a rank-r adapter on ``layer``, from its weight's (out, in, *kernel):
    A (r, in, *kernel), B (out, r, 1, ...)."""
    out, *rest = layer.weight.shape
    return (r, *rest), (out, r, *[1] * (len(rest) - 1))


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


# T2V-Turbo's list pairs its tensors with the UNet's layers in the order its UNet class registers them
# (nn.Module.modules()). That class (their model_scope/unet_3d_condition.py, diffusers' UNet3DConditionModel
# adapted) registers up_blocks before mid_block, and in the time embedding (diffusers' TimestepEmbedding)
# cond_proj between linear_1 and linear_2; ours registers those two the other way round, so they are walked
# in its order here. Inside the blocks both register alike (tests/parity/test_lora_parity.py compares).
TURBO_ORDER = {"": ("conv_in", "time_embedding", "transformer_in", "down_blocks", "up_blocks", "mid_block",
                    "conv_norm_out", "conv_out"),
               "time_embedding": ("linear_1", "cond_proj", "linear_2")}


def list_layers(model) -> list[str]:
    """The paths of every nn.Linear, nn.Conv2d and nn.Conv3d of ``model`` (adapted or not, never an adapter's
    own A or B) in T2V-Turbo's module order: the layer each pair of its list file is for."""
    def walk(module, path):
        if isinstance(module, WEIGHT_LAYERS):
            yield path
            return
        children, order = dict(module.named_children()), TURBO_ORDER.get(path, ())
        for name in sorted(children, key=lambda n: order.index(n) if n in order else len(order)):
            yield from walk(children[name], f"{path}.{name}" if path else name)

    return list(walk(model, ""))


def lora_layers(model) -> dict[str, LoRALayer]:
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALayer)}


def weight_layer(model, path, what):
    """The layer at ``path`` if an adapter can go on it, else a LoRAError starting with ``what``."""
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise LoRAError(f"{what} names no layer of this {type(model).__name__} (no module {path!r}); is the LoRA "
                        "for another architecture?") from None
    if not isinstance(layer, WEIGHT_LAYERS):
        raise LoRAError(f"{what} names a {type(layer).__name__}; LoRA adapts nn.Linear, nn.Conv2d and nn.Conv3d "
                        "layers")
    if getattr(layer, "groups", 1) != 1:
        raise LoRAError(f"{what} names a grouped convolution (groups={layer.groups}); LoRA on it is not supported")
    return layer


def _replace(model, path, new):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def adapter_names(model) -> list[str]:
    return list(dict.fromkeys(n for layer in lora_layers(model).values() for n in layer.lora_A))


def active_adapters(model) -> list[str]:
    return list(dict.fromkeys(n for layer in lora_layers(model).values() for n in layer.active))


def adapter_weight(model, name) -> float:
    """The user's weight s of adapter ``name`` (1 if it is nowhere)."""
    return next((layer.scale[name] for layer in lora_layers(model).values() if name in layer.scale), 1.0)


def lora_enabled(model) -> bool:
    """False after ``enable_adapters(model, False)`` (no adapter acts); True without any LoRA."""
    return all(layer.enabled for layer in lora_layers(model).values())


# ------------------------------------------------------------------------ putting adapters on and off
@contextlib.contextmanager
def undone_on_error(model, adapter_name):
    """What runs inside either completes, or adapter ``adapter_name`` comes off again: the model as it was."""
    try:
        yield
    except BaseException:
        remove_lora(model, adapter_name)
        raise


def add_lora(model, paths, rank=16, alpha=None, adapter_name="default", use_rslora=False) -> list[nn.Parameter]:
    """Put an adapter named ``adapter_name`` on each layer in ``paths`` (nn.Linear, nn.Conv2d, nn.Conv3d);
    returns its parameters (the ones to train). ``rank`` and ``alpha``: one number, or {path: number} for each
    layer. Every layer, rank and alpha is checked before the model changes."""
    plan = {}
    for path in paths:
        layer = weight_layer(model, path, f"layer {path!r}")
        if isinstance(layer, LoRALayer) and adapter_name in layer.lora_A:
            raise LoRAError(f"layer {path!r} already has an adapter named {adapter_name!r}")
        r = check_rank(layer, rank[path] if isinstance(rank, dict) else rank, f"layer {path!r}: LoRA rank")
        a = alpha.get(path) if isinstance(alpha, dict) else alpha
        plan[path] = (layer, r, a if a is None else number(f"layer {path!r}: LoRA alpha", a, error=LoRAError))
    enabled, params = lora_enabled(model), []
    with undone_on_error(model, adapter_name):
        for path, (layer, r, a) in plan.items():
            if not isinstance(layer, LoRALayer):
                layer = next(cls for cls in LORA_CLASSES if isinstance(layer, cls.plain_class))(layer)
                layer.enabled = enabled  # as the model's other LoRA layers
                _replace(model, path, layer)
            layer.add_adapter(adapter_name, r, a, use_rslora)
            params += [layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight]
    return params


def remove_lora(model, adapter_name=None):
    """Take the adapter ``adapter_name`` (None: every adapter) off; a layer left without adapters becomes the
    layer it was again, its weights exactly as they were. Removing a fused adapter undoes the fusion."""
    layers = lora_layers(model)
    if adapter_name is not None and any(adapter_name in layer.fused for layer in layers.values()):
        unfuse_adapters(model)  # a fusion is the whole model's: undone everywhere at once
    for path, layer in layers.items():
        for name in [adapter_name] if adapter_name is not None else list(layer.lora_A):
            if name in layer.lora_A:
                layer.remove_adapter(name)
        if not layer.lora_A:
            _replace(model, path, layer.plain())


def set_active(model, names, weights=None):
    """Only ``names`` act, each with weight ``weights[i]`` (default 1). Undoes a fusion first."""
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names):
        raise LoRAError(f"{len(names)} adapter names but {len(weights)} weights")
    weights = [number(f"the weight of adapter {n!r}", w, error=LoRAError) for n, w in zip(names, weights)]
    known = adapter_names(model)
    for n in names:
        if n not in known:
            raise LoRAError(f"no adapter named {n!r}; loaded: {known}")
    for layer in lora_layers(model).values():
        layer.unfuse()
        layer.active = [n for n in names if n in layer.lora_A]
        for n, w in zip(names, weights):
            if n in layer.scale:
                layer.scale[n] = w


def set_frozen(model, names):
    """The adapters ``names`` still act (when active) but are detached: no gradient reaches them."""
    for layer in lora_layers(model).values():
        layer.frozen = {n for n in names if n in layer.lora_A}


def enable_adapters(model, enabled=True):
    """``enabled=False``: no adapter acts (a fusion is undone first); the active ones and their weights are kept,
    and ``enabled=True`` brings them back as they were."""
    for layer in lora_layers(model).values():
        if not enabled:
            layer.unfuse()
        layer.enabled = bool(enabled)


def fuse_adapters(model, lora_scale=1.0, names=None):
    """Fold adapters into the weights (the rules: the module docstring): ``names`` (default: the active ones)
    become the active ones and act from inside W, each at its weight times ``lora_scale``."""
    layers = lora_layers(model)
    if not layers:
        raise LoRAError("fuse_lora: no LoRA is loaded")
    if not lora_enabled(model):
        raise LoRAError("fuse_lora: the LoRA is disabled (disable_lora); enable_lora() first")
    lora_scale = number("lora_scale", lora_scale, error=LoRAError)
    names = active_adapters(model) if names is None else list(names)
    set_active(model, names, [adapter_weight(model, n) for n in names])  # their weights as they are
    for layer in layers.values():
        layer.fuse(lora_scale)


def unfuse_adapters(model):
    for layer in lora_layers(model).values():
        layer.unfuse()


# ------------------------------------------------------------------------------- from and to files
def list_pairs(model, tensors, source="LoRA") -> dict[str, Pair]:
    """{layer path: Pair} from T2V-Turbo's list [up_0, down_0, up_1, down_1, ...], pair i for ``list_layers``'
    i-th layer; a list of another length is refused, saying what it would fit."""
    layers = list_layers(model)
    if len(tensors) % 2:
        raise LoRAError(f"{source}: {len(tensors)} tensors, an odd number; T2V-Turbo's list holds (up, down) pairs")
    if len(tensors) // 2 != len(layers):
        dim = guidance_embedding_dim(model, tensors, len(layers))
        hint = "" if dim is None else (
            f": one pair more, for a guidance embedding (time_embedding.cond_proj) this UNet does not have. "
            f"T2V-Turbo's UNet has one (time_cond_proj_dim={dim}); give this UNet one first: "
            f"t2vlab.techniques.consistency.add_guidance_embedding(pipe.unet, {dim})")
        raise LoRAError(f"{source}: {len(tensors) // 2} (up, down) pairs, but this {type(model).__name__} has "
                        f"{len(layers)} Linear/Conv2d/Conv3d layers{hint}", guidance_embedding_dim=dim)
    return {path: Pair(f"item {2 * i + 1} (down)", tensors[2 * i + 1], f"item {2 * i} (up)", tensors[2 * i])
            for i, path in enumerate(layers)}


def guidance_embedding_dim(model, tensors, n_layers) -> int | None:
    """The width of the guidance embedding a list file was made for, when it has one pair more than this UNet
    without one (T2V-Turbo's: its pair 2 is time_embedding.cond_proj, Linear(dim -> ...)); else None."""
    config = getattr(model, "config", None)
    if len(tensors) // 2 != n_layers + 1 or getattr(config, "time_cond_proj_dim", 0) is not None:
        return None
    down = tensors[5] if len(tensors) > 5 else None
    return down.shape[1] if isinstance(down, torch.Tensor) and down.ndim == 2 else 256


def check_pair(model, path, pair, settings, source):
    """(rank, alpha) of a file's adapter for layer ``path``, once it is checked to fit: the layer takes LoRA,
    A and B have its shapes and finite values, and the settings agree (its rank, its target_modules)."""
    layer = weight_layer(model, path, f"{source}: key {pair.key_a!r}")
    want_a, want_b = pair_shapes(layer, pair.a.shape[0] if pair.a.ndim else 0)
    if pair.a.shape != want_a or pair.b.shape != want_b:
        shape_a, shape_b = (f"({', '.join(map(str, s))})" for s in pair_shapes(layer, "r"))
        raise LoRAError(f"{source}: keys {pair.key_a!r} {tuple(pair.a.shape)} and {pair.key_b!r} "
                        f"{tuple(pair.b.shape)} do not fit layer {path!r} ({type(layer).__name__}, weight "
                        f"{tuple(layer.weight.shape)}); expected A {shape_a} and B {shape_b}")
    for key, t in ((pair.key_a, pair.a), (pair.key_b, pair.b)):
        if not torch.isfinite(t).all():
            raise LoRAError(f"{source}: key {key!r} holds NaN or infinite values (a damaged file, or a training "
                            "that diverged)")
    if not settings.targets(path):
        raise LoRAError(f"{source}: key {pair.key_a!r}: layer {path!r} is not among the adapter's target_modules")
    r = check_rank(layer, want_a[0], f"{source}: key {pair.key_a!r}: LoRA rank")
    if settings.rank(path) not in (None, r):
        raise LoRAError(f"{source}: key {pair.key_a!r} has rank {r}, but the settings give layer {path!r} "
                        f"r={settings.rank(path)} (r / rank_pattern)")
    return r, settings.alpha(path, r, pair.alpha)


def load_lora(model, tensors, config=None, adapter_name="default", source="LoRA", settings_source=None):
    """Add adapter ``adapter_name`` to ``model`` from a file's tensors, {key: tensor} (peft's, diffusers' or
    kohya's names, component prefix removed) or T2V-Turbo's list [up, down, ...], and its settings ``config``.

    A transaction: every key, shape, value and setting is checked before the model changes (a LoRAError
    naming ``source`` and the key, or ``settings_source`` and the setting), and a failure on the way, an
    interrupt included, takes the adapter off again. Returns the adapted layers' paths."""
    settings = lora_settings(config, settings_source or source)
    if adapter_name in adapter_names(model):
        raise LoRAError(f"adapter_name {adapter_name!r} is already loaded; pick another or unload it")
    pairs = list_pairs(model, tensors, source) if isinstance(tensors, (list, tuple)) else split_pairs(tensors, source)
    if not pairs:
        raise LoRAError(f"{source}: holds no LoRA weights")
    plan = {path: check_pair(model, path, pair, settings, source) for path, pair in pairs.items()}
    with undone_on_error(model, adapter_name):
        add_lora(model, list(plan), {p: r for p, (r, _) in plan.items()}, {p: a for p, (_, a) in plan.items()},
                 adapter_name, use_rslora=settings.use_rslora)
        layers = lora_layers(model)
        with torch.no_grad():
            for path, pair in pairs.items():
                layers[path].lora_A[adapter_name].weight.copy_(pair.a)
                layers[path].lora_B[adapter_name].weight.copy_(pair.b)
    return list(pairs)


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
    ranks, alphas, rslora = {}, {}, False
    for path, layer in lora_layers(model).items():
        if adapter_name in layer.lora_A:
            ranks[path] = layer.lora_A[adapter_name].weight.shape[0]
            alphas[path] = layer.alpha[adapter_name]
            rslora = rslora or adapter_name in layer.rslora
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {"r": r, "lora_alpha": alpha, "target_modules": sorted(ranks), "use_rslora": rslora,
            "rank_pattern": {p: v for p, v in ranks.items() if v != r},
            "alpha_pattern": {p: v for p, v in alphas.items() if v != alpha}}
