"""LoRA files: the formats adapters ship in, read as data, and diffusers' format written.

Nothing from a file runs: a safetensors file holds only tensors, a pickle (``.pt``, ``.bin``) is read by
``t2vlab.safe_pickle``, and the settings are JSON checked as data (``lora_settings``). A pattern in the
settings is compared with layer names as a string, never run as a regular expression.

The formats ``read_lora_file`` reads (each gives a ``LoRAFile``: tensors, settings, where they came from):

- diffusers' ``pytorch_lora_weights.safetensors`` (what its ``save_lora_weights`` writes from peft's
  ``get_peft_model_state_dict``, and what ``save_lora_file`` writes): keys ``unet.<module path>.lora_A.weight`` /
  ``.lora_B.weight``; the settings as JSON in the safetensors metadata under ``lora_adapter_metadata``, each key
  with the same ``unet.`` prefix. Also read: the older diffusers names (``.lora.down``/``.lora.up``,
  ``.lora_linear_layer.down``/``.up``), kohya-style ``<layer>.alpha`` scalars, and such a state dict pickled
  (``pytorch_lora_weights.bin``). Without any alpha, alpha = r (scale 1), as diffusers assumes.
- a PEFT adapter folder (``PeftModel.save_pretrained``; MCM's adapters are these): ``adapter_config.json``
  (peft's ``LoraConfig``) and ``adapter_model.safetensors``, keys ``base_model.model.<module path>.lora_A.weight``.
- T2V-Turbo's list file (``unet_lora.pt``): a ``torch.save``d Python list [up, down, up, down, ...] with no
  names, one (B, A) pair for every nn.Linear, nn.Conv2d and nn.Conv3d of the UNet in its module order; it is
  read as that list, and ``t2vlab.lora.list_layers`` says which layer each pair is for.

The settings are peft's ``LoraConfig`` keys: ``r`` and ``lora_alpha`` (the scale of a layer's correction is
alpha / r, or alpha / sqrt(r) with ``use_rslora``), ``rank_pattern`` / ``alpha_pattern`` ({layer name: r or
alpha} for the layers that differ), ``target_modules`` (the layer names the adapter was made for). peft's rule
for a name, kept here as plain string comparison: it applies to a layer whose path equals it or ends with "."
followed by it, and the first key in the file's order that applies wins.
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path
from typing import NamedTuple

import safetensors
import safetensors.torch
import torch

from .atomic import atomic_file
from .checkpoint import CheckpointError
from .checks import boolean, number, positive_int
from .safe_pickle import LazyTensor, read_pickle

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."  # PeftModel's state dict: the wrapped model's names under this prefix
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# (A suffix, B suffix) of every key format read; the first is the one written
KEY_FORMATS = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
               (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))
LAYER_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.")


class LoRAError(ValueError):
    """A LoRA file or setting that does not fit this model, naming the file and the key, layer or argument.
    ``guidance_embedding_dim``: set when the file is T2V-Turbo's and fits once the UNet has a guidance embedding of
    that width (``techniques.consistency.add_guidance_embedding``), so that a caller may give it one and retry."""

    def __init__(self, message, guidance_embedding_dim=None):
        super().__init__(message)
        self.guidance_embedding_dim = guidance_embedding_dim


# ------------------------------------------------------------------------------------ the settings
@dataclasses.dataclass(frozen=True)
class LoRASettings:
    """An adapter's settings, checked (``lora_settings``); None where the file does not say."""

    r: int | None = None
    lora_alpha: float | None = None
    rank_pattern: dict = dataclasses.field(default_factory=dict)  # layer name -> r
    alpha_pattern: dict = dataclasses.field(default_factory=dict)  # layer name -> alpha
    target_modules: tuple | None = None  # layer names; None: not said (or not a list: see lora_settings)
    use_rslora: bool = False

    def rank(self, path):
        """The rank the settings give layer ``path`` (None: they do not say)."""
        return pattern_value(self.rank_pattern, path, self.r)

    def alpha(self, path, rank, file_alpha=None):
        """alpha for layer ``path`` of rank ``rank``: its ``alpha_pattern`` entry, else the file's own alpha for the
        layer (kohya's ``<layer>.alpha``), else ``lora_alpha``, else the rank (scale 1)."""
        default = file_alpha if file_alpha is not None else rank if self.lora_alpha is None else self.lora_alpha
        return pattern_value(self.alpha_pattern, path, default)

    def targets(self, path) -> bool:
        return self.target_modules is None or any(name_matches(name, path) for name in self.target_modules)


def lora_settings(config, source="LoRA") -> LoRASettings:
    """The settings in ``config`` (a dict read from JSON; None: none), each checked, or a LoRAError naming
    ``source`` and the key. Keys of peft's that do not change how the weights act (``task_type``,
    ``lora_dropout``, ``init_lora_weights``, ...) are ignored; ones that would need more than an A and a B
    (DoRA, trained biases, saved modules, another adapter type) are refused by name.

    ``target_modules`` is checked when it is a list of layer names; peft also takes a single string, which it
    runs as a regular expression: that is never done here, and the file's keys alone say which layers it adapts."""
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise LoRAError(f"{source}: the LoRA settings must be a JSON object, got {type(config).__name__}")

    def check(key, rule, **kw):
        if config.get(key) is None:
            return None
        return rule(f"{source}: setting {key!r}", config[key], error=LoRAError, **kw)

    if config.get("peft_type") not in (None, "LORA"):
        raise LoRAError(f"{source}: setting 'peft_type' is {config['peft_type']!r:.80}; only LoRA adapters are read")
    refused = {"use_dora": "DoRA adapters (use_dora)", "lora_bias": "a trained bias on lora_B (lora_bias)"}
    for key, what in refused.items():
        if check(key, boolean):
            raise LoRAError(f"{source}: setting {key!r} is true: {what} are not supported")
    if config.get("bias") not in (None, "none"):
        raise LoRAError(f"{source}: setting 'bias' is {config['bias']!r:.80}: trained biases of the base layers "
                        "are not supported (only 'none')")
    if config.get("modules_to_save"):
        raise LoRAError(f"{source}: setting 'modules_to_save' lists whole modules saved beside the adapter; "
                        "only LoRA weights are read")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        targets = tuple(layer_name(f"{source}: setting 'target_modules'", t) for t in targets)
    elif targets is not None and not isinstance(targets, str):
        raise LoRAError(f"{source}: setting 'target_modules' must be a list of layer names, got {targets!r:.80}")
    return LoRASettings(r=check("r", positive_int), lora_alpha=check("lora_alpha", number),
                        rank_pattern=patterns(config, "rank_pattern", positive_int, source),
                        alpha_pattern=patterns(config, "alpha_pattern", number, source),
                        target_modules=targets if isinstance(targets, tuple) else None,
                        use_rslora=bool(check("use_rslora", boolean)))


def patterns(config, key, rule, source) -> dict:
    """A ``rank_pattern``/``alpha_pattern`` setting: {layer name: value}, each name and value checked."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LoRAError(f"{source}: setting {key!r} must be an object {{layer name: value}}, got {value!r:.80}")
    return {layer_name(f"{source}: setting {key!r}", name): rule(f"{source}: setting {key!r}[{name!r:.80}]", v,
                                                                 error=LoRAError)
            for name, v in value.items()}


def layer_name(what, name) -> str:
    """A layer name of a pattern: letters, digits, '_' and '.', as module paths are; anything else (the syntax
    of a regular expression) is refused: patterns are compared as names here, never run."""
    if not isinstance(name, str) or not name or not set(name) <= LAYER_NAME_CHARACTERS:
        raise LoRAError(f"{what}: {name!r:.80} is not a layer name (letters, digits, '_' and '.'); t2vlab compares "
                        "these names with layer paths and never runs them as regular expressions")
    return name


def name_matches(name, path) -> bool:
    """peft's rule, as string comparison: ``name`` applies to the layer at ``path`` if it is the path or its end
    after a dot ("to_q" applies to "...attn1.to_q", not to "...attn1.xto_q")."""
    return path == name or path.endswith("." + name)


def pattern_value(patterns, path, default):
    """The value of the first key of ``patterns`` that applies to ``path`` (``name_matches``), else ``default``."""
    return next((value for name, value in patterns.items() if name_matches(name, path)), default)


# ------------------------------------------------------------------------------------ the tensors
class Pair(NamedTuple):
    """One layer's adapter as a file holds it: A (down) and B (up) with the keys they came under, and a
    kohya-style alpha (None: none)."""

    key_a: str
    a: torch.Tensor
    key_b: str
    b: torch.Tensor
    alpha: float | None = None


def tensor_value(key, value, source) -> torch.Tensor:
    """A file's entry as a floating-point tensor (a lazily read pickle tensor is read now), or a LoRAError."""
    try:
        value = value.load() if isinstance(value, LazyTensor) else value
    except CheckpointError as e:
        raise LoRAError(str(e)) from None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        what = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise LoRAError(f"{source}: key {key!r} is a {what}, not a floating-point tensor")
    return value


def alpha_value(key, value, source) -> float:
    """A kohya-style ``<layer>.alpha``: a number or a one-element tensor, finite."""
    if isinstance(value, (torch.Tensor, LazyTensor)):
        value = tensor_value(key, value, source)
        if value.numel() != 1:
            raise LoRAError(f"{source}: key {key!r} must be one number (a scalar alpha), got shape "
                            f"{tuple(value.shape)}")
        value = value.item()
    return number(f"{source}: key {key!r}", value, error=LoRAError)


def split_pairs(tensors, source="LoRA") -> dict[str, Pair]:
    """{module path: Pair} from peft-, diffusers- or kohya-named keys."""
    if not isinstance(tensors, dict):
        raise LoRAError(f"{source}: expected a dict of LoRA tensors, got {type(tensors).__name__}")
    halves, alphas = {}, {}
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise LoRAError(f"{source}: key {key!r:.80} is not a string")
        if key.endswith(".alpha"):
            alphas[key[:-len(".alpha")]] = alpha_value(key, value, source)
            continue
        for i, suffix in ((i, s) for fmt in KEY_FORMATS for i, s in enumerate(fmt)):
            if key.endswith(suffix):
                halves.setdefault(key[:-len(suffix)], [None, None])[i] = (key, tensor_value(key, value, source))
                break
        else:
            raise LoRAError(f"{source}: key {key!r} is not a LoRA weight (expected <layer>.lora_A.weight / "
                            f".lora_B.weight)")
    pairs = {}
    for path, (a, b) in halves.items():
        if a is None or b is None:
            raise LoRAError(f"{source}: key {(a or b)[0]!r} has no {'lora_B' if b is None else 'lora_A'} partner")
        pairs[path] = Pair(*a, *b, alphas.get(path))
    for path in alphas.keys() - pairs.keys():
        raise LoRAError(f"{source}: key {path + '.alpha'!r} is the alpha of a layer without LoRA weights")
    return pairs


def strip_prefix(d, prefix, source="", check=True):
    """Keys under ``prefix.`` lose it; with no key under any component prefix, keys are taken as they are."""
    if not any(isinstance(k, str) and k.startswith(prefix + ".") for k in d):
        other = sorted(k for k in d if isinstance(k, str) and k.split(".")[0] in (
            "text_encoder", "text_encoder_2", "transformer"))
        if check and other:
            raise LoRAError(f"{source}: key {other[0]!r} is for another model; this LoRA holds nothing for the "
                            f"{prefix}")
        return dict(d)
    if check:
        for k in d:
            if not (isinstance(k, str) and k.startswith(prefix + ".")):
                raise LoRAError(f"{source}: key {k!r:.80} is not for the {prefix} (only {prefix}.* LoRA layers are "
                                "read)")
    return {k[len(prefix) + 1:]: v for k, v in d.items() if isinstance(k, str) and k.startswith(prefix + ".")}


# --------------------------------------------------------------------------------------- reading
@dataclasses.dataclass
class LoRAFile:
    """What a LoRA file holds, not yet checked against a model: ``tensors`` {key: tensor} (the named formats,
    component prefix removed) or [up, down, ...] (T2V-Turbo's list), ``config`` the settings as stored (raw
    JSON; {} without), ``source`` the weight file and ``settings_source`` where the settings were read."""

    tensors: dict | list
    config: object
    source: str
    settings_source: str


def read_lora_file(path_or_folder, weight_name=None, prefix="unet") -> LoRAFile:
    """Read a LoRA from a file or a folder: a PEFT adapter folder (``adapter_config.json`` beside its weights),
    else ``pytorch_lora_weights.safetensors`` (or ``weight_name``) in the folder; a file by its suffix
    (.safetensors, or a pickle: .pt / .pth / .bin). See the module docstring."""
    path = Path(path_or_folder)
    if path.is_dir():
        if (path / PEFT_CONFIG_NAME).is_file() and (weight_name is None or weight_name in PEFT_WEIGHT_NAMES):
            return read_peft_folder(path, weight_name)
        path = path / (weight_name or LORA_WEIGHT_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.name in PEFT_WEIGHT_NAMES and (path.parent / PEFT_CONFIG_NAME).is_file():  # a PEFT folder's weights
        return read_peft_folder(path.parent, path.name)
    if path.suffix in PICKLE_SUFFIXES:
        tensors, config, where = read_pickled(path), {}, str(path)
    elif path.suffix == ".safetensors":
        tensors, meta = read_safetensors(path)
        where = f"{path} (metadata {METADATA_KEY})"
        config = parse_json(meta[METADATA_KEY], where) if METADATA_KEY in meta else {}
        config = strip_prefix(config, prefix, where, check=False) if isinstance(config, dict) else config
    else:
        raise LoRAError(f"{path}: not a LoRA file t2vlab reads (.safetensors, or a pickle .pt / .pth / .bin read "
                        "without running it)")
    if isinstance(tensors, dict):
        tensors = strip_prefix(tensors, prefix, path)
    return LoRAFile(tensors, config, str(path), where)


def read_peft_folder(folder, weight_name=None) -> LoRAFile:
    """A folder ``PeftModel.save_pretrained`` wrote: the settings from ``adapter_config.json``, the tensors from
    ``adapter_model.safetensors`` (or ``.bin``) with the ``base_model.model.`` prefix removed."""
    folder = Path(folder)
    config_path = folder / PEFT_CONFIG_NAME
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LoRAError(f"{config_path}: cannot read it ({e})") from None
    config = parse_json(text, str(config_path))
    names = [weight_name] if weight_name else list(PEFT_WEIGHT_NAMES)
    path = next((folder / n for n in names if (folder / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{folder}: a PEFT adapter folder ({PEFT_CONFIG_NAME}) without its weights "
                                f"({' or '.join(names)})")
    tensors = read_pickled(path) if path.suffix in PICKLE_SUFFIXES else read_safetensors(path)[0]
    if not isinstance(tensors, dict):
        raise LoRAError(f"{path}: expected a dict of LoRA tensors, got {type(tensors).__name__}")
    if any(isinstance(k, str) and k.startswith(PEFT_PREFIX) for k in tensors):
        for k in tensors:
            if not (isinstance(k, str) and k.startswith(PEFT_PREFIX)):
                raise LoRAError(f"{path}: key {k!r:.80} is not under {PEFT_PREFIX!r} like the file's other keys")
        tensors = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}
    return LoRAFile(tensors, config, str(path), str(config_path))


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file, or a LoRAError naming it."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise LoRAError(f"{path}: not a readable LoRA safetensors file ({e})") from None


def read_pickled(path):
    """A pickled LoRA (a state dict, or T2V-Turbo's list of tensors), read without running it; a list's items
    must be tensors (read now)."""
    try:
        data = read_pickle(path)
    except CheckpointError as e:
        raise LoRAError(str(e)) from None
    if isinstance(data, (list, tuple)):
        return [tensor_value(f"item {i}", t, path) for i, t in enumerate(data)]
    if not isinstance(data, dict):
        raise LoRAError(f"{path}: holds a {type(data).__name__}; a LoRA file holds a dict of tensors, or a list "
                        "of them (T2V-Turbo's)")
    return data


def parse_json(text, source):
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError) as e:  # nesting thousands deep, an integer of 5000 digits...
        raise LoRAError(f"{source}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None


# --------------------------------------------------------------------------------------- writing
def save_lora_file(path, tensors, config, prefix="unet"):
    """Write ``tensors`` (peft names) and ``config`` in diffusers' file format, atomically."""
    path = Path(path)
    state = {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt", METADATA_KEY: json.dumps({f"{prefix}.{k}": v for k, v in config.items()},
                                                        indent=2, sort_keys=True)}
    with atomic_file(path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata=metadata)
    return path
