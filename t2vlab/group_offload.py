"""Group offloading: the weights live on the CPU (or in files) and visit the GPU a group of layers at a time.

A forward pass reads its layers in order, so the GPU needs to hold only the group that runs now:

    group k's first module starts   ->  onload:  copy group k's weights to the onload device
    group k's last module ends      ->  offload: drop the device copy (the CPU copy, or the file, stays)

What a group is (diffusers 0.42.1's rules, ``hooks/group_offloading.py``):

- ``offload_type="block_level"``: the entries of the model's top-level ``nn.ModuleList``/``nn.Sequential``
  children (the UNet's ``down_blocks`` and ``up_blocks``), ``num_blocks_per_group`` consecutive entries a group;
  every other top-level child (``conv_in``, ``time_embedding``, ``transformer_in``, ``mid_block``, the head)
  and the model's own tensors form one more group, on the device for the model's whole forward.
- ``offload_type="leaf_level"``: every weight layer (convolution, linear, embedding: the layers that layerwise
  casting casts, a LoRA layer with its adapters) is a group of its own; the remaining tensors (the norms')
  form one group per module that holds them. The least memory, the most copies.

A group is brought in when any module inside it starts (not only its first: a caller that runs one
layer of a block, as DeepCache does, still finds the weights there), and sent back when its last module
ends; what a forward leaves on the device (a block it entered but did not finish) goes back when the
model's forward ends.

- ``use_stream=True`` (a CUDA onload device): the copies run on a second CUDA stream from pinned CPU memory,
  and while group k computes, group k+1 is already copying (the order is recorded during the first forward,
  then each group prefetches the next). ``record_stream=True`` marks the copies as used by the compute
  stream so that sending a group back need not wait for it (more memory, less waiting);
  ``low_cpu_mem_usage=True`` pins each copy when it is made instead of keeping pinned copies. Without a CUDA
  onload device the copies are synchronous (a warning says so once).
- ``offload_to_disk_path=folder``: each group's weights are written once, when offloading is switched on, to
  its own safetensors file in a new folder ``folder/t2vlab-offload-<model>-<random>/`` (written whole or not
  at all, ``t2vlab.atomic``), and read back a group at a time; at rest a weight is a placeholder of its shape
  that takes no memory and reads as NaN (so a weight used without its module running shows as NaN, never
  as plausible numbers). Integer buffers (indices) stay in memory. This also makes the mechanism measurable
  on a CPU (``resident_bytes``). ``disable_group_offload`` reads the weights back and removes that folder's
  files, and the folder if nothing else was put there.

``model.state_dict()`` (and so ``save_pretrained``) reads the files for the weights at rest in them.
Enable layerwise casting before group offloading: the copies and files then hold the storage dtype.
For inference: the weights change under autograd's feet, so a backward pass would not see them.

Where this differs from diffusers: any module of a group brings it in (diffusers: the group's first, with a
fallback for prefetched groups only); offloading never copies back (the weights do not change in a forward);
prefetching works with several blocks a group (diffusers sets 1); a weight at rest in a file takes no memory
(diffusers keeps an ``empty_like`` tensor of full size); the files go to a folder of our own, removed on
disable (diffusers writes ``group_<hash>.safetensors`` into the folder itself and reuses a file of that name
that it finds there); ``use_stream=True`` without CUDA warns and copies synchronously (diffusers refuses).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .atomic import atomic_folder
from .checks import boolean, one_of, positive_int
from .layerwise_casting import CAST_LAYERS

OFFLOAD_TYPES = ("block_level", "leaf_level")
LEAF_LAYERS = CAST_LAYERS
FOLDER_PREFIX = "t2vlab-offload-"


class GroupOffloadError(ValueError):
    """Group offloading cannot be switched as asked (already on, or a file of ours is missing)."""


class Group:
    """Tensors that travel together: where they rest, and whether they are on the onload device now."""

    def __init__(self, name, members, tensors, triggers, leader):
        self.name = name
        self.members = members  # the modules whose forward calls may bring the group in (inputs moved there)
        self.tensors = tensors  # the parameters and buffers of the group (each once)
        self.triggers = triggers  # every module whose start brings the group in
        self.leader = leader  # the module whose end sends the group back
        self.home = {}  # id(tensor) -> its copy on the offload device (tensors not in a file)
        self.keys = {}  # id(tensor) -> its name in the group's file (disk mode)
        self.placeholder = {}  # id(tensor) -> what it is at rest in disk mode
        self.file = None
        self.onloaded = False
        self.pending = False  # copied on the side stream, not yet waited for
        self.next = None  # the group that runs after this one (recorded in the first forward)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def onload(self, plan):
        """Copy the group to the onload device (on the side stream if there is one: then ``pending``)."""
        if self.onloaded:
            return
        stream = plan.stream
        compute = torch.cuda.current_stream() if stream is not None else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            loaded = {}
            if self.file is not None:  # straight to the device without a stream; via pinned memory with one
                loaded = safetensors.torch.load_file(self.file, device="cpu" if stream else str(plan.onload_device))
            for t in self.tensors:
                if id(t) in self.keys:
                    source = loaded[self.keys[id(t)]]
                    source = source.pin_memory() if stream is not None else source
                else:
                    source = self.home[id(t)]
                    if stream is not None and not source.is_pinned():  # low_cpu_mem_usage: pinned when needed
                        source = source.pin_memory()
                t.data = source.to(plan.onload_device, non_blocking=plan.non_blocking or stream is not None)
                if stream is not None and plan.record_stream:
                    t.data.record_stream(compute)
        self.onloaded, self.pending = True, stream is not None

    def offload(self, plan):
        """Drop the device copies: each tensor is its offload-device copy (or its placeholder) again."""
        if not self.onloaded:
            return
        if plan.stream is not None and not plan.record_stream:  # the compute stream may still read them
            torch.cuda.current_stream().synchronize()
        for t in self.tensors:
            t.data = self.placeholder[id(t)] if id(t) in self.keys else self.home[id(t)]
        self.onloaded = self.pending = False


@dataclass
class GroupOffload:
    """What ``enable_group_offload`` did to a model (kept as ``model._group_offload``)."""

    onload_device: torch.device
    offload_device: torch.device
    offload_type: str
    stream: object = None
    non_blocking: bool = False
    record_stream: bool = False
    groups: list = field(default_factory=list)
    devices: dict = field(default_factory=dict)  # id(tensor) -> its device before enabling
    handles: list = field(default_factory=list)
    folder: Path | None = None  # our folder under offload_to_disk_path
    names: dict = field(default_factory=dict)  # state_dict name -> (group, key in its file)
    tracing: bool = True  # the first forward records the order of the groups
    order: list = field(default_factory=list)
    seen: set = field(default_factory=set)

    def enter(self, group):
        """A module of ``group`` starts: make sure its weights are there, and start copying the next group."""
        if self.tracing and group not in self.seen:
            self.seen.add(group)
            self.order.append(group)
        group.onload(self)
        if group.pending:  # the compute stream waits for this group's copy only (the next one is queued after)
            torch.cuda.current_stream().wait_stream(self.stream)
            group.pending = False
        if group.next is not None:
            group.next.onload(self)

    def finish(self):
        """The model's forward ends: send back what is still on the device; after the first, link the order."""
        for g in self.groups:
            g.offload(self)
        if self.tracing:
            self.tracing = False
            missed = [g.name for g in self.groups if g not in self.seen]
            if missed:  # a model that reads a layer's weight without calling the layer would compute with it offloaded
                warnings.warn(f"group offloading: {len(missed)} group(s) never ran in the first forward, so their "
                              f"weights stayed offloaded: {', '.join(missed[:5])}{' ...' if len(missed) > 5 else ''}. "
                              "If the model reads those weights without calling their modules, its output is wrong "
                              "(NaN with offload_to_disk_path); a coarser offload_type may serve it", stacklevel=2)
            if self.stream is not None:
                for a, b in zip(self.order, self.order[1:]):
                    a.next = b


# ------------------------------------------------------------------------------------------- the groups
def _tensors(modules, taken, recurse=True):
    """The parameters and buffers of ``modules`` (each tensor once over all groups: ``taken`` holds ids)."""
    out = []
    for m in modules:
        for t in [*m.parameters(recurse=recurse), *m.buffers(recurse=recurse)]:
            if id(t) not in taken:
                taken.add(id(t))
                out.append(t)
    return out


def _subtree(modules):
    return [sub for m in modules for sub in m.modules()]


def block_level_groups(model: nn.Module, num_blocks_per_group: int) -> list[Group]:
    """The top-level ModuleList/Sequential entries, ``num_blocks_per_group`` at a time, then the rest in one."""
    groups, rest, taken = [], [], set()
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            for i in range(0, len(child), num_blocks_per_group):
                members = list(child[i:i + num_blocks_per_group])
                groups.append(Group(f"{name}.{i}-{i + len(members) - 1}", members, _tensors(members, taken),
                                    _subtree(members), members[-1]))
        else:
            rest.append(child)
    tensors = _tensors([model], taken, recurse=False) + _tensors(rest, taken)
    groups.append(Group(f"{type(model).__name__} (the rest)", [model] + rest, tensors, [model] + _subtree(rest),
                        model))
    return groups


def leaf_level_groups(model: nn.Module) -> list[Group]:
    """Every weight layer a group (with everything under it); the other tensors, one group per module holding them."""
    leaves, holders, taken = [], [], set()

    def walk(module, prefix):
        if isinstance(module, LEAF_LAYERS):
            leaves.append((prefix, module))
            return
        holders.append((prefix, module))
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    groups = [Group(name, [m], _tensors([m], taken), list(m.modules()), m) for name, m in leaves]
    for name, m in holders:
        tensors = _tensors([m], taken, recurse=False)
        if tensors:
            groups.append(Group(name or type(model).__name__, [m], tensors, [m], m))
    return [g for g in groups if g.tensors]


# --------------------------------------------------------------------------------------------- switching
def enable_group_offload(model: nn.Module, onload_device, offload_device="cpu", offload_type="block_level",
                         num_blocks_per_group=1, non_blocking=False, use_stream=False, record_stream=False,
                         low_cpu_mem_usage=False, offload_to_disk_path=None) -> GroupOffload:
    """Keep ``model``'s weights on ``offload_device`` (or in files) and bring them to ``onload_device`` a group
    at a time; see the module docstring. Returns the ``GroupOffload`` record (also ``model._group_offload``)."""
    if getattr(model, "_group_offload", None) is not None:
        raise GroupOffloadError("group offloading is already on: disable_group_offload() first")
    onload_device, offload_device = _device("onload_device", onload_device), _device("offload_device", offload_device)
    one_of("offload_type", offload_type, OFFLOAD_TYPES)
    positive_int("num_blocks_per_group", num_blocks_per_group)
    for name, v in (("non_blocking", non_blocking), ("use_stream", use_stream), ("record_stream", record_stream),
                    ("low_cpu_mem_usage", low_cpu_mem_usage)):
        boolean(name, v)
    if record_stream and not use_stream:
        raise ValueError("record_stream=True needs use_stream=True (it marks the side stream's copies)")
    if offload_to_disk_path is not None and not isinstance(offload_to_disk_path, (str, Path)):
        raise ValueError(f"offload_to_disk_path must be a folder path (or None), got {offload_to_disk_path!r:.80}")
    stream = None
    if use_stream:
        if onload_device.type == "cuda":
            stream = torch.cuda.Stream(onload_device)
        else:
            warnings.warn(f"use_stream=True: onload_device is {onload_device}, not a CUDA device, so there is no "
                          "stream to prefetch on; the groups are copied synchronously", stacklevel=3)
    plan = GroupOffload(onload_device, offload_device, offload_type, stream, non_blocking,
                        record_stream and stream is not None)
    plan.groups = (block_level_groups(model, num_blocks_per_group) if offload_type == "block_level"
                   else leaf_level_groups(model))
    for g in plan.groups:
        for t in g.tensors:
            plan.devices[id(t)] = t.device

    if offload_to_disk_path is not None:
        _write_files(model, plan, Path(offload_to_disk_path))  # all written before any weight is dropped
    pin = stream is not None and not low_cpu_mem_usage
    try:  # where each tensor rests: its copy on the offload device, or (in a file) a NaN placeholder
        for g in plan.groups:
            for t in g.tensors:
                if id(t) in g.keys:
                    g.placeholder[id(t)] = placeholder(t, offload_device)
                else:
                    home = t.data.to(offload_device)
                    g.home[id(t)] = home.pin_memory() if pin else home
    except BaseException:
        _remove_files(plan)
        raise
    for g in plan.groups:
        for t in g.tensors:
            t.data = g.placeholder[id(t)] if id(t) in g.keys else g.home[id(t)]
    _register_hooks(model, plan)
    model._group_offload = plan
    return plan


def enable_sequential_cpu_offload(model: nn.Module, device="cuda") -> GroupOffload:
    """Each weight layer on ``device`` only for its own forward, on the CPU otherwise (leaf level, no stream)."""
    return enable_group_offload(model, device, "cpu", offload_type="leaf_level")


def disable_group_offload(model: nn.Module):
    """Every tensor back where it was before, in memory; our files (and then our folder) removed."""
    plan = getattr(model, "_group_offload", None)
    if plan is None:
        return
    restored = []
    for g in plan.groups:  # read everything first: a missing file changes nothing
        if g.file is not None and not Path(g.file).is_file():
            raise GroupOffloadError(f"{g.file}: the offloaded weights of {g.name} are gone (deleted while "
                                    "offloading was on?); reload the model")
        loaded = safetensors.torch.load_file(g.file) if g.file is not None else {}
        for t in g.tensors:
            source = loaded[g.keys[id(t)]] if id(t) in g.keys else g.home[id(t)]
            device = plan.devices[id(t)]
            if source.is_pinned() and device.type == "cpu":  # give back ordinary memory, as it was
                source = torch.empty_like(source, pin_memory=False).copy_(source)
            restored.append((t, source.to(device)))
    for h in plan.handles:
        h.remove()
    for t, source in restored:
        t.data = source
    model._group_offload = None
    _remove_files(plan)


# ----------------------------------------------------------------------------------------------- plumbing
def _device(name, v) -> torch.device:
    try:
        device = torch.device(v)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a device such as 'cuda' or 'cpu', got {v!r:.80}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={v!r}: no CUDA device is available here")
    return device


def placeholder(t, device):
    """A tensor of ``t``'s shape and dtype that holds one element, NaN: what a weight in a file is at rest."""
    return torch.full((), float("nan"), device=device).to(t.dtype).expand(t.shape)


def _to(obj, device, non_blocking):
    """Tensors inside ``obj`` (tuples, lists, dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device, non_blocking) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device, non_blocking) for k, v in obj.items()}
    return obj


def _register_hooks(model, plan):
    """Onload at the start of any module of a group (first of all its pre-hooks: before layerwise casting's
    cast up), offload at its leader's end (last of its hooks), and at the model's end whatever is left."""

    def entering(group, move):
        def hook(module, args, kwargs):
            plan.enter(group)
            if move:
                return _to(args, plan.onload_device, plan.non_blocking), _to(kwargs, plan.onload_device,
                                                                             plan.non_blocking)
        return hook

    def leaving(group):
        return lambda module, args, output: group.offload(plan)

    for g in plan.groups:
        members = {id(m) for m in g.members}
        for m in g.triggers:
            plan.handles.append(m.register_forward_pre_hook(entering(g, id(m) in members), prepend=True,
                                                            with_kwargs=True))
        plan.handles.append(g.leader.register_forward_hook(leaving(g), always_call=True))
    def entering_model(module, args, kwargs):  # first of all: the inputs to the onload device
        return _to(args, plan.onload_device, plan.non_blocking), _to(kwargs, plan.onload_device, plan.non_blocking)

    plan.handles.append(model.register_forward_pre_hook(entering_model, prepend=True, with_kwargs=True))
    plan.handles.append(model.register_forward_hook(lambda module, args, output: plan.finish(), always_call=True))
    if plan.names:
        plan.handles.append(model.register_state_dict_post_hook(_state_dict_from_files(plan)))


def _write_files(model, plan, root):
    """One safetensors file per group with its floating tensors, in a new folder of ours, written whole."""
    names = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
    folder = root / f"{FOLDER_PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', type(model).__name__)}-{secrets.token_hex(4)}"
    with atomic_folder(folder, mark=False) as tmp:  # a scratch folder: only _remove_files removes it
        for i, g in enumerate(plan.groups):
            tensors = {}
            for t in g.tensors:
                if t.is_floating_point():
                    g.keys[id(t)] = key = names.get(id(t), f"tensor{len(tensors)}")
                    tensors[key] = t.data.detach().to("cpu").contiguous()
            if tensors:
                g.file = f"{i:04d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', g.name)}.safetensors"
                safetensors.torch.save_file(tensors, str(tmp / g.file))
    plan.folder = folder
    for g in plan.groups:
        if g.file is not None:
            g.file = str(folder / g.file)
            plan.names.update({key: (g, key) for key in g.keys.values()})


def _remove_files(plan):
    """Only what ``_write_files`` wrote: the group files, then the folder if it is empty."""
    if plan.folder is None:
        return
    for g in plan.groups:
        if g.file is not None:
            Path(g.file).unlink(missing_ok=True)
    try:
        plan.folder.rmdir()
    except OSError:  # someone put something else there: leave it
        warnings.warn(f"{plan.folder}: left in place, it holds files t2vlab did not write", stacklevel=3)


def _state_dict_from_files(plan):
    """A state_dict post-hook: weights at rest in files are read from them (not the NaN placeholders)."""
    def hook(module, state, prefix, local_metadata):
        cache = {}
        for name, (g, key) in plan.names.items():
            if prefix + name in state and not g.onloaded:
                if g.file not in cache:
                    cache[g.file] = safetensors.torch.load_file(g.file)
                state[prefix + name] = cache[g.file][key]
    return hook


def resident_bytes(model: nn.Module, device=None) -> int:
    """Bytes of memory the model's parameters and buffers hold now (on ``device``, or anywhere)."""
    return storage_bytes([*model.parameters(), *model.buffers()], device)


def storage_bytes(tensors, device=None) -> int:
    """Bytes of memory ``tensors`` hold (on ``device``, or anywhere): each storage once; a meta tensor holds
    none, a disk-mode placeholder one element. (Give a list made once to measure often: walking a model's
    modules for its parameters costs more than this sum.)"""
    want = torch.device(device) if device is not None else None
    storages = {}
    for t in tensors:
        if t.device.type == "meta" or (want is not None and (t.device.type != want.type or
                                                             want.index not in (None, t.device.index))):
            continue
        s = t.untyped_storage()
        storages[t.device, s.data_ptr()] = s.nbytes()
    return sum(storages.values())
