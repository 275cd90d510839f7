"""LoRA on the pipeline, with diffusers' method names (the adapters themselves: ``t2vlab.lora``; the files they
come in: ``t2vlab.lora_files``).

    pipe.load_lora_weights("folder or file", adapter_name="purple")    # ours, diffusers', a PEFT folder, a list
    pipe.load_lora_weights("yhzhai/mcm", subfolder="modelscopet2v-webvid")            # from the Hub: MCM
    pipe.load_lora_weights("jiachenli-ucsb/T2V-Turbo-MS", weight_name="unet_lora.pt")  # T2V-Turbo's list file
    pipe.set_adapters(["purple"], adapter_weights=[0.8])      # or pipe.set_lora_scale(0.8)
    pipe.fuse_lora(lora_scale=1.0); pipe.unfuse_lora()        # fold into W / put W back exactly
    pipe.disable_lora(); pipe.enable_lora()                   # off / on again, as chosen and weighted
    pipe.unload_lora_weights()                                # the plain UNet again, bit for bit
    pipe.save_lora_weights("folder", adapter_name="purple")   # pytorch_lora_weights.safetensors

Our files are diffusers' LoRA format (``unet.<module path>.lora_A.weight`` / ``.lora_B.weight``), so a LoRA trained
with diffusers + peft loads here, and ours loads there. A load either completes or leaves the pipeline as it was.
Where each adapter came from is kept (``pipe.lora_sources``): a known distilled adapter, loaded and active, gives
``pipe.recommended`` its sampler, steps and guidance (``t2vlab.weights.KNOWN_ADAPTERS``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .lora import (
    LoRAError,
    active_adapters,
    adapter_config,
    adapter_names,
    adapter_weight,
    enable_adapters,
    fuse_adapters,
    load_lora,
    lora_enabled,
    lora_layers,
    lora_state_dict,
    remove_lora,
    set_active,
    unfuse_adapters,
)
from .lora_files import (
    LORA_WEIGHT_NAME,
    PEFT_CONFIG_NAME,
    PEFT_WEIGHT_NAMES,
    read_lora_file,
    save_lora_file,
    strip_prefix,
)
from .techniques.consistency import add_guidance_embedding, remove_guidance_embedding
from .weights import hub_id_of


class LoraLoaderMixin:
    """Mixed into ``TextToVideoPipeline`` (which provides ``unet`` and ``lora_sources``)."""

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, weight_name=None,
                          subfolder=None, local_files_only=False):
        """Add a LoRA to the UNet from a folder (a PEFT adapter folder, or one holding
        ``pytorch_lora_weights.safetensors`` or ``weight_name``), a file (.safetensors, or a pickle such as
        T2V-Turbo's list file, read without running it), a Hub id (with ``subfolder`` / ``weight_name``; offline
        with ``local_files_only`` or HF_HUB_OFFLINE=1), or a dict of tensors. ``adapter_name`` defaults to
        "default_<n>"; the new adapter acts at once, beside those already loaded (also beside fused ones)."""
        names = adapter_names(self.unet)
        adapter_name = f"default_{len(names)}" if adapter_name is None else adapter_name
        if adapter_name in names:
            raise LoRAError(f"adapter_name {adapter_name!r} is already loaded; pick another or unload it")
        source = pretrained_model_name_or_path_or_dict
        if isinstance(source, dict):
            tensors = strip_prefix(source, "unet", "the LoRA dict")
            load_lora(self.unet, tensors, {}, adapter_name, source="the LoRA dict")
            where = "the LoRA dict"
        else:
            file = read_lora_file(locate_lora(source, subfolder, weight_name, local_files_only), weight_name)
            load_lora(self.unet, file.tensors, file.config, adapter_name, file.source, file.settings_source)
            where = adapter_address(file.source) or file.source
        self.lora_sources[adapter_name] = where
        return adapter_name

    def get_list_adapters(self) -> dict:
        return {"unet": adapter_names(self.unet)}

    def get_active_adapters(self) -> list[str]:
        return active_adapters(self.unet)

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
        keep = list(dict.fromkeys(active + names))
        set_active(self.unet, keep, [scale if n in names else adapter_weight(self.unet, n) for n in keep])

    def disable_lora(self):
        """No adapter acts (a fusion is undone); which are active, and their weights, are kept for ``enable_lora``."""
        enable_adapters(self.unet, False)

    def enable_lora(self):
        enable_adapters(self.unet, True)

    def fuse_lora(self, lora_scale=1.0, adapter_names=None):
        """Fold the active adapters (or ``adapter_names``, which become the active ones), each at its weight times
        ``lora_scale``, into the UNet's weights: no extra work per step. Fusing again replaces the fusion (never
        compounds it); ``lora_scale`` leaves the adapters' weights as they are; ``unfuse_lora`` restores the
        weights exactly. The rules in full: ``t2vlab.lora``."""
        fuse_adapters(self.unet, lora_scale, adapter_names)

    def unfuse_lora(self):
        unfuse_adapters(self.unet)

    def unload_lora_weights(self):
        """Remove every adapter: the UNet is the plain one again, its weights exactly as before."""
        remove_lora(self.unet)
        self.lora_sources.clear()

    def delete_adapters(self, adapter_names):
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            if name not in self.get_list_adapters()["unet"]:
                raise LoRAError(f"no adapter named {name!r}; loaded: {self.get_list_adapters()['unet']}")
            remove_lora(self.unet, name)
            self.lora_sources.pop(name, None)

    def active_lora_sources(self) -> list:
        """Where the adapters that act now came from, in order (those loaded by ``load_lora_weights``)."""
        if not lora_enabled(self.unet):
            return []
        return [self.lora_sources[n] for n in self.get_active_adapters() if n in self.lora_sources]

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


def locate_lora(source, subfolder=None, weight_name=None, local_files_only=False) -> Path:
    """The local folder or file of a LoRA: ``source`` (and ``subfolder``) as it is when it exists, else a Hub
    repository id, downloaded (only the LoRA's files: ``weight_name``, or a PEFT folder's and diffusers' file
    names) or, offline, taken from the Hub cache."""
    path = Path(os.fspath(source)).expanduser()
    if path.exists():
        return path / subfolder if subfolder else path
    repo = hub_id_of(source)
    if repo is None:
        raise FileNotFoundError(f"LoRA not found: {source!r} is neither a file or folder nor a Hub id like "
                                "'yhzhai/mcm'")
    import huggingface_hub  # imported here: only a Hub id needs it, and it is slow to import

    inside = f"{subfolder.strip('/')}/" if subfolder else ""
    names = [weight_name, PEFT_CONFIG_NAME] if weight_name else [PEFT_CONFIG_NAME, PEFT_WEIGHT_NAMES[0],
                                                                 LORA_WEIGHT_NAME]
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    what = f"the LoRA {repo!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    try:
        root = huggingface_hub.snapshot_download(repo, allow_patterns=[inside + n for n in names],
                                                 local_files_only=offline)
    except Exception as e:  # no network, not in the cache, gated...: say what to do
        how = "it is not in the local Hub cache (offline mode)" if offline else f"the download failed ({e})"
        raise FileNotFoundError(f"cannot get {what}: {how}. Download it once with network access, or pass a "
                                "local path.") from e
    folder = Path(root) / subfolder if subfolder else Path(root)
    if not (folder / weight_name if weight_name else folder).exists():
        how = "not in the local Hub cache (offline mode)" if offline else "not in the repository"
        raise FileNotFoundError(f"cannot get {what}: {inside}{weight_name or ''} is {how}")
    return folder


def adapter_address(path) -> tuple[str, str] | None:
    """(Hub id, what inside it: a file, or a PEFT folder) for a path in the Hub cache
    (``.../models--OWNER--NAME/snapshots/<hash>/...``), else None."""
    path = Path(path)
    if path.name in PEFT_WEIGHT_NAMES and (path.parent / PEFT_CONFIG_NAME).is_file():
        path = path.parent  # a PEFT adapter is its folder
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            repo = hub_id_of(Path(*parts[:i + 3]))
            return None if repo is None else (repo, "/".join(parts[i + 3:]))
    return None


def load_adding_guidance_embedding(pipe, source, **kwargs):
    """``pipe.load_lora_weights(source, **kwargs)``, for T2V-Turbo's list file too: a list made for a UNet with a
    guidance embedding (one (up, down) pair more than this UNet has layers) first gives the UNet one
    (``techniques.consistency.add_guidance_embedding``, its base weight drawn from seed 0: the file holds only its
    LoRA), then loads. Returns (adapter name, the width of the embedding added, or None). The command line and
    the studio load adapters this way."""
    try:
        return pipe.load_lora_weights(source, **kwargs), None
    except LoRAError as e:
        if e.guidance_embedding_dim is None:
            raise
        dim = e.guidance_embedding_dim
    add_guidance_embedding(pipe.unet, dim)
    try:
        return pipe.load_lora_weights(source, **kwargs), dim
    except Exception:  # the load failed after all: the UNet as it was, without the embedding
        remove_guidance_embedding(pipe.unet)
        raise

