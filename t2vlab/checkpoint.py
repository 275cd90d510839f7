"""How weights arrive: configs, weight files and the base class every model shares.

A checkpoint folder in the published layout looks like::

    model_index.json
    unet/config.json           unet/diffusion_pytorch_model[.fp16].safetensors   (or .bin)
    vae/config.json            vae/diffusion_pytorch_model[.fp16].safetensors
    text_encoder/config.json   text_encoder/model[.fp16].safetensors             (or pytorch_model.bin)
    tokenizer/                 vocab.json + merges.txt, or tokenizer.json
    scheduler/scheduler_config.json

Loading a model (``ModelBase.from_pretrained``) is four plain steps:

1. read ``config.json`` into the model's config dataclass (keys starting with ``_`` and nulls are
   the reference library's bookkeeping and mean "default");
2. build the model on the ``meta`` device: shapes only, no memory, no random initialisation;
3. read the weight file (safetensors preferred; ``.bin`` only through ``torch.load(weights_only=True)``,
   which refuses pickled code);
4. check names and shapes against the model, then ``load_state_dict(strict=True, assign=True)``,
   which makes the loaded tensors the parameters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from . import group_offload, layerwise_casting
from .atomic import atomic_file, folder_to_write, write_text
from .checks import number, positive_int
from .os_errors import not_a_file

logger = logging.getLogger("t2vlab")

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model",)
# Refuse to build a model beyond this many parameters (40 GB in float32; the published UNet has 1.4e9):
# a config.json from a stranger must not be able to make us allocate terabytes.
MAX_PARAMETERS = 10**10
TRANSFORMERS_WEIGHTS = ("model", "pytorch_model")


class CheckpointError(ValueError):
    """A checkpoint file or config that cannot be used, with what was found and what to do."""


# ----------------------------------------------------------------------------------------- configs
def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def config_from_dict(config_cls, data, *, source="config"):
    """Fill the dataclass ``config_cls`` from a dict as the reference libraries write it.

    ``_class_name``/``_diffusers_version``/``_use_default_values`` and other ``_`` keys are skipped,
    ``null`` means "use the default", lists become tuples; other unknown keys are logged and ignored.
    """
    if isinstance(data, config_cls):
        return data
    if isinstance(data, (str, os.PathLike)):
        source, data = str(data), read_json(data)
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a dict, a path to a config.json or a {config_cls.__name__}, "
                        f"got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs, unknown = {}, []
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key not in names:
            unknown.append(key)
            continue
        if value is None:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    if unknown:
        logger.info("%s: ignoring keys %s", source, ", ".join(sorted(unknown)))
    config = config_cls(**kwargs)
    if hasattr(config, "validate"):
        config.validate()
    return config


def config_to_dict(config, class_name) -> dict:
    data = {"_class_name": class_name}
    for key, value in dataclasses.asdict(config).items():
        data[key] = list(value) if isinstance(value, tuple) else value
    return data


def check_positive_ints(config, *names, limit=1 << 16):
    """Refuse absurd sizes (negative channels, a billion layers) before anything is allocated."""
    for name in names:
        values = getattr(config, name)
        many = isinstance(values, (tuple, list))
        for i, v in enumerate(values if many else (values,)):
            positive_int(f"config {name}" + (f"[{i}]" if many else ""), v, high=limit, error=CheckpointError)


def check_small_positive(config, *names):
    """Refuse epsilons and scales that are not finite numbers in (0, 1]."""
    for name in names:
        number(f"config {name}", getattr(config, name), low=0, high=1, low_open=True, error=CheckpointError)


# ------------------------------------------------------------------------------------ weight files
def add_variant(filename: str, variant: str | None) -> str:
    """'diffusion_pytorch_model.safetensors' + 'fp16' -> 'diffusion_pytorch_model.fp16.safetensors'."""
    if not variant:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def weight_candidates(stems, variant=None):
    """File names to look for, best first: safetensors before .bin, one file before a sharded index."""
    names = []
    for ext in ("safetensors", "bin"):
        for stem in stems:
            names += [add_variant(f"{stem}.{ext}", variant), add_variant(f"{stem}.{ext}.index.json", variant)]
    return names


def find_weights(folder, stems=DIFFUSERS_WEIGHTS, variant=None) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    for name in weight_candidates(stems, variant):
        if (folder / name).is_file():
            return folder / name
        broken = not_a_file(folder / name)  # there, but a link that loops or points nowhere, a folder...
        if broken is not None:
            raise broken
    present = sorted(p.name for p in folder.iterdir())
    hint = ""
    if variant and any((folder / n).is_file() for n in weight_candidates(stems, None)):
        hint = f" The folder has weights without the {variant!r} variant: pass variant=None."
    elif not variant and any(n.split(".")[-2:-1] == ["fp16"] or ".fp16." in n for n in present):
        hint = " The folder has 'fp16' weights only: pass variant='fp16'."
    raise FileNotFoundError(f"no weight file in {folder} (looked for {', '.join(weight_candidates(stems, variant))}; "
                            f"found {', '.join(present) or 'nothing'}).{hint}")


def load_weight_file(path) -> dict[str, torch.Tensor]:
    """Read one weight file (or a sharded index) into a dict of CPU tensors. Never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path) or FileNotFoundError(f"weight file not found: {path}")
    if path.name.endswith(".index.json"):
        index = read_json(path)
        shards = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(shards, dict):
            raise CheckpointError(f"{path}: a sharded index needs a 'weight_map' object (tensor name -> file name)")
        state = {}
        for shard in sorted(set(map(str, shards.values()))):
            if Path(shard).name != shard:  # only files beside the index, never ../ or absolute paths
                raise CheckpointError(f"{path}: shard {shard!r} is not a file name in the same folder")
            state.update(load_weight_file(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read this safetensors file ({e}; {_safetensors_diagnosis(path)}). "
                                  "It is corrupted or truncated (an interrupted download?): delete it and download "
                                  "it again.") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e) and "zip" not in str(e):
            raise CheckpointError(f"{path}: cannot read this .bin file ({e}); prefer a .safetensors copy.") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load. This .bin file contains pickled objects other than tensors, which could "
            f"run code on your machine ({str(e).splitlines()[0]}). Use a .safetensors copy of the weights.") from None
    except EOFError:
        raise CheckpointError(f"{path}: the .bin file ends early (truncated): download it again.") from None
    try:  # old (non-zip) torch serialization cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load pickled objects other than tensors "
                              f"({str(e).splitlines()[0]}). Use a .safetensors copy of the weights.") from None
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: cannot read this .bin file ({e}): it may be truncated.") from None


def _safetensors_diagnosis(path) -> str:
    """Say which part of an unreadable safetensors file is broken: its header, or which tensor's bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if len(head) < 8 or not 0 < n <= size - 8:
            return f"the header length field says {n} bytes but the file has {size}: the header is corrupted"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"the {n}-byte header is not valid JSON: the header is corrupted"
    body = size - 8 - n
    if not isinstance(header, dict):
        return "the header is not a JSON object: the header is corrupted"
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        end = offsets[-1] if isinstance(offsets, list) and offsets else 0
        if isinstance(end, int) and end > body:
            return f"tensor {name!r} needs bytes up to {end} but the body has only {body}: the file is truncated"
    return "the header parses; a tensor entry is inconsistent"


def check_state_dict(model: nn.Module, state: dict, source, ignore_unexpected=()) -> None:
    """Compare names and shapes with the model; raise one error that lists what differs."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k in [k for k in state if k not in expected and any(k.endswith(s) for s in ignore_unexpected)]:
        del state[k]
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
             for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k]]
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if k in expected and not v.is_floating_point()]
    problems = tensor_problems({"missing tensors": missing, "unexpected tensors": unexpected,
                                "shape mismatches": wrong, "non-float tensors": not_float})
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__} built from its config "
                              f"(is the config.json from the same checkpoint?): {problems}")


def tensor_problems(found: dict, most=8) -> str:
    """What is wrong with a file's tensors, in one line: '2 missing tensors: a; b | 1 shape mismatches: c: ...'
    for each non-empty {title: [item, ...]}, listing at most ``most`` items of each; '' when all are empty."""
    parts = []
    for title, items in found.items():
        if items:
            more = f" (and {len(items) - most} more)" if len(items) > most else ""
            parts.append(f"{len(items)} {title}: {'; '.join(items[:most])}{more}")
    return " | ".join(parts)


# ----------------------------------------------------------------------------------- the base class
class ModelBase(nn.Module):
    """from_config / from_pretrained / save_pretrained for every model of the package.

    Subclasses set ``config_class`` (a dataclass), ``weight_stems`` (file names without extension)
    and take the config as their only constructor argument.
    """

    config_class: type = None
    weight_stems = DIFFUSERS_WEIGHTS
    ignore_unexpected: tuple = ()  # suffixes of harmless extra tensors in published files

    @classmethod
    def from_config(cls, config, **overrides):
        config = config_from_dict(cls.config_class, config, source=f"{cls.__name__} config")
        if overrides:
            config = dataclasses.replace(config, **overrides)
            config.validate() if hasattr(config, "validate") else None
        cls._meta_model(config, source=f"{cls.__name__} config")  # refuse absurd sizes before allocating
        return cls(config)

    @classmethod
    def _meta_model(cls, config, source):
        """Build on the ``meta`` device (shapes only, no memory) and refuse more than MAX_PARAMETERS."""
        with torch.device("meta"):
            model = cls(config)
        n = sum(p.numel() for p in model.parameters())
        if n > MAX_PARAMETERS:
            raise CheckpointError(f"{source}: this config describes a model of {n:,} parameters, beyond the "
                                  f"limit of {MAX_PARAMETERS:,}; it is not a config of this model family")
        return model

    @classmethod
    def config_filename(cls):
        return "config.json"

    @classmethod
    def from_pretrained(cls, path, subfolder=None, torch_dtype=None, variant=None, device=None):
        """Load config and weights from ``path[/subfolder]``; see the module docstring for the steps."""
        folder = Path(path) / subfolder if subfolder else Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{cls.__name__}: folder not found: {folder}")
        config = config_from_dict(cls.config_class, folder / cls.config_filename(),
                                  source=str(folder / cls.config_filename()))
        weights = find_weights(folder, cls.weight_stems, variant)
        cls._meta_model(config, source=str(folder / cls.config_filename()))  # refuse absurd sizes before reading
        state = cls.convert_state_dict(load_weight_file(weights))
        return cls.from_state_dict(config, state, weights, torch_dtype=torch_dtype, device=device)

    @classmethod
    def from_state_dict(cls, config, state: dict, source, torch_dtype=None, device=None):
        """Steps 2 and 4 of loading: build on ``meta``, check ``state``'s names and shapes (naming
        ``source`` in any error), cast, and make its tensors the parameters. ``state`` is consumed."""
        config = config_from_dict(cls.config_class, config, source=str(source))
        model = cls._meta_model(config, source=str(source))
        check_state_dict(model, state, source, cls.ignore_unexpected)
        dtype = torch_dtype or torch.float32
        for k in list(state):  # convert one tensor at a time: peak memory is the file plus one tensor
            state[k] = state[k].to(dtype)
        model.load_state_dict(state, strict=True, assign=True)
        state.clear()
        if device is not None:
            model.to(device)
        return model.eval()

    @classmethod
    def convert_state_dict(cls, state: dict) -> dict:
        """Rename the tensors of another file layout to this model's names (default: none)."""
        return state

    def config_dict(self) -> dict:
        """What ``save_pretrained`` writes as config.json (a subclass adds the keys its other readers expect)."""
        return config_to_dict(self.config, type(self).__name__)

    def save_pretrained(self, folder, variant=None, safe_serialization=True, state_dict=None):
        """Write ``config.json`` and the weight file into ``folder``; each appears whole or not at all
        (``t2vlab.atomic``: written beside the target, then renamed). ``state_dict``: the tensors to write
        (default: the model's own). A new folder is marked as t2vlab's; files of an existing folder are replaced
        only if t2vlab wrote it (``atomic.folder_to_write``). Returns the weight file's path."""
        folder = Path(folder)
        stem = self.weight_stems[0] if safe_serialization else self.weight_stems[-1]
        target = folder / add_variant(f"{stem}.{'safetensors' if safe_serialization else 'bin'}", variant)
        folder_to_write(folder, [self.config_filename(), target.name])
        write_text(folder / self.config_filename(), json.dumps(self.config_dict(), indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in (state_dict or self.state_dict()).items()}
        with atomic_file(target) as tmp:
            if safe_serialization:
                safetensors.torch.save_file(state, str(tmp), metadata={"format": "pt"})
            else:
                torch.save(state, tmp)
        return target

    @property
    def dtype(self):
        """The dtype the model computes in: its parameters', or layerwise casting's compute dtype while that is on."""
        return layerwise_casting.compute_dtype(self) or next(self.parameters()).dtype

    @property
    def device(self):
        return next(self.parameters()).device

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------ memory: t2vlab.layerwise_casting, t2vlab.group_offload
    def enable_layerwise_casting(self, storage_dtype=torch.float8_e4m3fn, compute_dtype=None,
                                 skip_modules_pattern=None, skip_modules_classes=None, non_blocking=False):
        """Weights stored in ``storage_dtype``, each layer cast to ``compute_dtype`` for its forward."""
        layerwise_casting.enable_layerwise_casting(self, storage_dtype, compute_dtype, skip_modules_pattern,
                                                   skip_modules_classes, non_blocking)

    def disable_layerwise_casting(self):
        layerwise_casting.disable_layerwise_casting(self)

    def enable_group_offload(self, onload_device, offload_device="cpu", offload_type="block_level",
                             num_blocks_per_group=1, non_blocking=False, use_stream=False, record_stream=False,
                             low_cpu_mem_usage=False, offload_to_disk_path=None):
        """Weights kept on ``offload_device`` (or in files), brought to ``onload_device`` a group at a time."""
        group_offload.enable_group_offload(self, onload_device, offload_device, offload_type, num_blocks_per_group,
                                           non_blocking, use_stream, record_stream, low_cpu_mem_usage,
                                           offload_to_disk_path)

    def disable_group_offload(self):
        group_offload.disable_group_offload(self)

    def enable_sequential_cpu_offload(self, device="cuda"):
        """Every weight layer brought to ``device`` for its own forward only (leaf-level group offloading)."""
        group_offload.enable_sequential_cpu_offload(self, device)
