"""The embedded tiny checkpoint: all five components in the published layout, random weights.

It is the offline default when no GPU or real weights are at hand: small enough to generate an
8-frame 64x64 video on a 2-core CPU in seconds, with the real CLIP vocabulary. Its weights are
random, so its videos are noise; it exists to run every line of the package anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from . import configs

MODEL_INDEX = {
    "_class_name": "TextToVideoSDPipeline",
    "_diffusers_version": "0.42.1",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet3DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

SCHEDULER_CONFIG = configs.SCHEDULER  # the published one

TINY_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=8,
                 norm_num_groups=8, cross_attention_dim=32,
                 down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"))
TINY_VAE = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=64,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


FP32, FP16_VARIANT = (None, torch.float32), ("fp16", torch.float16)


def write_checkpoint(path, models, overwrite=False, variants=(None,), extra=None):
    """Write ``models`` ({"unet", "vae", "text_encoder"}), the real-vocabulary tokenizer, the published
    scheduler config and model_index.json to ``path`` in the published layout; return it as a Path.

    ``variants``: variant names (None: float32 under the plain file names; "fp16": the float16 variant)
    or (name, dtype) pairs such as (None, torch.float16) for float16 weights under the plain names.
    The folder appears whole or not at all: everything is written to a temporary sibling folder
    that is renamed into place at the end. An existing ``path`` is an error unless ``overwrite``.
    """
    from .text import MAX_LENGTH, Tokenizer

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        dtypes = dict([FP32, FP16_VARIANT])
        for name, model in models.items():
            for variant, dtype in (v if isinstance(v, tuple) else (v, dtypes[v]) for v in variants):
                model.to(dtype).save_pretrained(tmp / name, variant=variant)
        text_encoder = models.get("text_encoder")  # the tokenizer pads to as many positions as it has
        length = MAX_LENGTH if text_encoder is None else min(MAX_LENGTH, text_encoder.config.max_position_embeddings)
        Tokenizer.default(length).save_pretrained(tmp / "tokenizer")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
        (tmp / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def make_tiny_checkpoint(path, seed=0, overwrite=False, variants=(None, "fp16")):
    """Write a complete tiny checkpoint (random weights, drawn from ``seed``) to ``path``; see write_checkpoint."""
    from .text import CLIPTextEncoder
    from .unet import UNet3DConditionModel
    from .vae import AutoencoderKL

    if Path(path).exists() and not overwrite:  # before building anything
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    torch.manual_seed(seed)
    models = {"unet": UNet3DConditionModel.from_config(TINY_UNET), "vae": AutoencoderKL.from_config(TINY_VAE),
              "text_encoder": CLIPTextEncoder.from_config(TINY_TEXT)}
    return write_checkpoint(path, models, overwrite=overwrite, variants=variants)


def cache_dir() -> Path:
    root = os.environ.get("T2VLAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "t2vlab"
    return Path(root)


def tiny_checkpoint(seed=0) -> Path:
    """The tiny checkpoint's folder in the cache, built on first use."""
    path = cache_dir() / f"tiny-seed{seed}"
    if not (path / "model_index.json").is_file():
        try:
            make_tiny_checkpoint(path, seed=seed, overwrite=path.exists())
        except OSError:  # another process may have finished it first
            if not (path / "model_index.json").is_file():
                raise
    return path
