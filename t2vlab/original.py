"""The original ModelScope files, read directly and converted to the published (diffusers) layout.

The folder ModelScope's pipeline and sd-webui-text2video read::

    configuration.json              model.model_args names the three files, model.model_cfg the UNet's sizes
    text2video_pytorch_model.pth    the UNet (ModelScope's UNetSD): a plain state dict
    VQGAN_autoencoder.pth           a training checkpoint of a whole latent-diffusion model; the
                                    autoencoder is its ["state_dict"]["first_stage_model.*"] tensors
    open_clip_pytorch_model.bin     a whole OpenCLIP ViT-H-14 (text and image towers)

The same weights under two sets of names. Each of our parameters comes from exactly one tensor of the
original files, named by ``unet_original_name`` / ``vae_original_name`` / ``text_original_name``
(ours -> theirs; the same table read backwards writes the original layout). On the way three things
change shape:

- the temporal transformers' ``proj_in``/``proj_out`` are 1x1 ``Conv1d`` there, ``Linear`` here: a weight
  (o, i, 1) becomes (o, i) (the same numbers: a 1x1 convolution *is* a linear layer over channels);
  the VAE's attention ``q``/``k``/``v``/``proj_out`` are 1x1 ``Conv2d``, (o, i, 1, 1) -> (o, i);
- OpenCLIP fuses the text attention's projections into one ``in_proj_weight`` (3C, C): rows 0..C-1 are
  q, C..2C-1 k, 2C..3C-1 v, split into ``q_proj``/``k_proj``/``v_proj``;
- the text encoder stops at the penultimate block, as ModelScope's ``FrozenOpenCLIPEmbedder(layer=
  "penultimate")`` does: token + position embedding, every block but the last, then ``ln_final``.
  The last block (and the image tower, the text projection, the logit scale) are left unread.

Sizes come from configuration.json where it gives them (the UNet's) and from the tensors' shapes where it
does not (the VAE's, the text tower's), so smaller and larger models in the same format load too. Two
facts are not in either and are fixed by ModelScope's code: every GroupNorm has 32 groups, and an
OpenCLIP text head is 64 wide.

Pickles are read without running anything from the file: ``torch.load(weights_only=True)`` first (memory
mapped, so a 5 GB training checkpoint costs only the tensors kept); a training checkpoint holding other
objects (optimizer state, callbacks, hyper-parameters) that it refuses is read by ``SafeUnpickler``,
which resolves no name from the file except the few that rebuild tensors, and turns every other object
into an inert ``Opaque`` placeholder.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import configs
from .atomic import atomic_folder, check_apart, check_replaceable
from .checkpoint import CheckpointError, config_from_dict, read_json, tensor_problems
from .checks import integer, is_number, positive_int
from .os_errors import not_a_file
from .safe_pickle import LazyTensor, materialize, read_pickle
from .schedulers import from_config as scheduler_from_config
from .text_encoder import CLIPTextEncoder
from .tokenizer import MAX_LENGTH, Tokenizer
from .unet import UNet3DConditionModel
from .vae import AutoencoderKL

CONFIGURATION = "configuration.json"
FILES = {"unet": "text2video_pytorch_model.pth", "vae": "VQGAN_autoencoder.pth",
         "text_encoder": "open_clip_pytorch_model.bin"}  # the defaults of model.model_args
MODEL_ARGS = {"unet": "ckpt_unet", "vae": "ckpt_autoencoder", "text_encoder": "ckpt_clip"}
VAE_PREFIX = "first_stage_model."
GROUPS = 32            # ModelScope's UNetSD and the latent-diffusion autoencoder hard-code GroupNorm(32, ...)
CLIP_HEAD_WIDTH = 64   # OpenCLIP text towers: heads = width // 64 (ViT-H-14: 1024 wide, 16 heads)
SAMPLE_SIZE = 32       # latent size of the original pipeline's 256x256 default (not stored in the files)
TRANSFORMER_IN_HEADS = 8  # our UNet (like diffusers') fixes transformer_in at 8 heads


# =========================================================================== recognising the folder
@dataclasses.dataclass
class OriginalCheckpoint:
    """What configuration.json says: the three weight files, the UNet's config, the frame count."""

    folder: Path
    files: dict          # component -> Path
    unet_config: dict    # UNetConfig keys
    max_frames: int
    model_cfg: dict      # as published


def is_original(folder) -> bool:
    """True for a folder in the original layout: a configuration.json whose model names UNet weights
    (and no model_index.json, which would make it the published layout)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file() or not (folder / CONFIGURATION).is_file():
        return False
    try:
        model = json.loads((folder / CONFIGURATION).read_text(encoding="utf-8")).get("model", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(model, dict) and "model_cfg" in model and "model_args" in model


def read_configuration(folder) -> OriginalCheckpoint:
    """Read configuration.json: the files it names (they must be beside it) and the UNet's sizes."""
    folder = Path(folder)
    path = folder / CONFIGURATION
    data = read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("model_cfg"), dict):
        raise CheckpointError(f"{path}: no model.model_cfg; not a ModelScope text-to-video configuration")
    args = model.get("model_args") if isinstance(model.get("model_args"), dict) else {}
    files = {}
    for component, key in MODEL_ARGS.items():
        name = args.get(key, FILES[component])
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{path}: model_args.{key}={name!r} must be a file name beside "
                                  f"configuration.json (no folders)")
        files[component] = folder / name
    frames = positive_int(f"{path}: model_args.max_frames", args.get("max_frames", 16), high=1024,
                          error=CheckpointError)
    cfg = model["model_cfg"]
    return OriginalCheckpoint(folder, files, unet_config_from(cfg, path), frames, cfg)


def unet_config_from(cfg: dict, source) -> dict:
    """Our UNet config from model_cfg (ModelScope's UNetSD arguments).

    Level i (0 = full resolution) has attention when its scale 1/2^i is in ``unet_attn_scales``: a
    CrossAttn*Block3D, else a plain one. The up path visits the levels deepest first.
    """
    def get(key, kind=int):
        value = cfg.get(key)
        if kind is int:
            return integer(f"{source}: model_cfg.{key}", value, error=CheckpointError)
        if not isinstance(value, list):
            raise CheckpointError(f"{source}: model_cfg.{key}={value!r}: expected a list")
        return value

    dim, mult = get("unet_dim"), get("unet_dim_mult", list)
    scales = get("unet_attn_scales", list)
    if not mult:
        raise CheckpointError(f"{source}: model_cfg.unet_dim_mult is empty: expected positive integers")
    for i, m in enumerate(mult):
        positive_int(f"{source}: model_cfg.unet_dim_mult[{i}]", m, error=CheckpointError)
    if str(cfg.get("temporal_attention", "True")) != "True":
        raise CheckpointError(f"{source}: model_cfg.temporal_attention={cfg.get('temporal_attention')!r}: this "
                              "architecture always has temporal attention")
    heads = cfg.get("unet_num_heads")
    if heads is not None and heads != TRANSFORMER_IN_HEADS:
        raise CheckpointError(f"{source}: model_cfg.unet_num_heads={heads!r}: the first temporal transformer "
                              f"(transformer_in) has {TRANSFORMER_IN_HEADS} heads in this architecture")
    levels = len(mult)
    attn = [2.0 ** -i in [float(s) for s in scales if is_number(s)] for i in range(levels)]
    return {
        "sample_size": SAMPLE_SIZE, "in_channels": get("unet_in_dim"), "out_channels": get("unet_out_dim"),
        "down_block_types": [("CrossAttnDownBlock3D" if a else "DownBlock3D") for a in attn],
        "up_block_types": [("CrossAttnUpBlock3D" if a else "UpBlock3D") for a in attn[::-1]],
        "block_out_channels": [dim * m for m in mult], "layers_per_block": get("unet_res_blocks"),
        "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": GROUPS,
        "norm_eps": 1e-5, "cross_attention_dim": get("unet_context_dim"),
        "attention_head_dim": get("unet_head_dim"),
    }


# =========================================================================== the names, ours -> theirs
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_original_name(name: str, config) -> str:
    """Our UNet parameter name -> the name in text2video_pytorch_model.pth.

    ``input_blocks``: 0 is conv_in (.0) and transformer_in (.1); then per level ``layers_per_block``
    blocks [resnet (.0, its temporal convolution inside it as .temopral_conv), spatial transformer (.1),
    temporal transformer (.2)], and after each level but the last, a downsampler block (.op).
    ``middle_block``: resnet, spatial, temporal, resnet (modules themselves, not lists). ``output_blocks``:
    per level, deepest first, ``layers_per_block + 1`` blocks like the input ones, the last also holding
    the upsampler (.conv).
    """
    n = config.layers_per_block
    rules = [
        (r"conv_in\.(.*)", lambda m: f"input_blocks.0.0.{m[1]}"),
        (r"transformer_in\.(.*)", lambda m: f"input_blocks.0.1.{m[1]}"),
        (r"time_embedding\.linear_1\.(.*)", lambda m: f"time_embed.0.{m[1]}"),
        (r"time_embedding\.linear_2\.(.*)", lambda m: f"time_embed.2.{m[1]}"),
        (r"conv_norm_out\.(.*)", lambda m: f"out.0.{m[1]}"),
        (r"conv_out\.(.*)", lambda m: f"out.2.{m[1]}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
         lambda m: f"input_blocks.{1 + int(m[1]) * (n + 1) + n}.op.{m[2]}"),
        (r"down_blocks\.(\d+)\.(\w+)\.(\d+)\.(.*)",
         lambda m: _block(f"input_blocks.{1 + int(m[1]) * (n + 1) + int(m[3])}", m[2], m[4])),
        (r"mid_block\.resnets\.(\d+)\.(\w+)\.(.*)", lambda m: f"middle_block.{3 * int(m[1])}.{RESNET[m[2]]}.{m[3]}"),
        (r"mid_block\.temp_convs\.(\d+)\.(.*)", lambda m: f"middle_block.{3 * int(m[1])}.temopral_conv.{m[2]}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda m: f"middle_block.1.{m[1]}"),
        (r"mid_block\.temp_attentions\.0\.(.*)", lambda m: f"middle_block.2.{m[1]}"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
         lambda m: f"output_blocks.{int(m[1]) * (n + 1) + n}."
                   f"{3 if config.up_block_types[int(m[1])].startswith('CrossAttn') else 1}.conv.{m[2]}"),
        (r"up_blocks\.(\d+)\.(\w+)\.(\d+)\.(.*)",
         lambda m: _block(f"output_blocks.{int(m[1]) * (n + 1) + int(m[3])}", m[2], m[4])),
    ]
    return _apply(rules, name, "UNet")


def _block(prefix, kind, rest):
    """One input/middle/output block of UNetSD: [resnet (+ temopral_conv), spatial, temporal]."""
    if kind == "resnets":
        layer, _, tail = rest.partition(".")
        return f"{prefix}.0.{RESNET[layer]}.{tail}"
    return {"temp_convs": f"{prefix}.0.temopral_conv.{rest}", "attentions": f"{prefix}.1.{rest}",
            "temp_attentions": f"{prefix}.2.{rest}"}[kind]


def vae_original_name(name: str, config) -> str:
    """Our VAE parameter name -> the name under ``first_stage_model.`` in VQGAN_autoencoder.pth
    (the latent-diffusion autoencoder's). Its decoder numbers levels from full resolution up
    (``decoder.up.0`` is the last to run), ours in the order they run."""
    levels = len(config.block_out_channels)
    resnet = {"conv_shortcut": "nin_shortcut"}
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    rules = [
        (r"(encoder|decoder)\.conv_norm_out\.(.*)", lambda m: f"{m[1]}.norm_out.{m[2]}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(.*)",
         lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet.get(m[3], m[3])}.{m[4]}"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+(?:\.0)?)\.(weight|bias)",
         lambda m: f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)",
         lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{resnet.get(m[3], m[3])}.{m[4]}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
         lambda m: f"encoder.down.{m[1]}.downsample.conv.{m[2]}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.*)",
         lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{resnet.get(m[3], m[3])}.{m[4]}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
         lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"),
        (r"((?:encoder|decoder)\.conv_(?:in|out)|quant_conv|post_quant_conv)\.(.*)", lambda m: f"{m[1]}.{m[2]}"),
    ]
    return VAE_PREFIX + _apply(rules, name, "VAE")


def text_original_name(name: str, config):
    """Our text-encoder parameter name -> (name in open_clip_pytorch_model.bin, part): ``part`` is
    (i, 3) for q/k/v, which are rows i*C..(i+1)*C-1 of OpenCLIP's fused ``in_proj_weight``/``in_proj_bias``."""
    qkv = {"q_proj": 0, "k_proj": 1, "v_proj": 2}
    layer = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    p = r"text_model\.encoder\.layers\.(\d+)\."
    m = re.fullmatch(p + r"self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)", name)
    if m:
        return f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", (qkv[m[2]], 3)
    rules = [
        (r"text_model\.embeddings\.token_embedding\.weight", lambda m: "token_embedding.weight"),
        (r"text_model\.embeddings\.position_embedding\.weight", lambda m: "positional_embedding"),
        (r"text_model\.final_layer_norm\.(.*)", lambda m: f"ln_final.{m[1]}"),
        (p + r"(layer_norm1|layer_norm2|self_attn\.out_proj|mlp\.fc1|mlp\.fc2)\.(.*)",
         lambda m: f"transformer.resblocks.{m[1]}.{layer[m[2]]}.{m[3]}"),
    ]
    return _apply(rules, name, "text encoder"), None


def _apply(rules, name, what):
    for pattern, to in rules:
        m = re.fullmatch(pattern, name)
        if m:
            return to(m)
    raise KeyError(f"no original name for the {what} parameter {name!r}")  # a bug: every name has one


ORIGINAL_NAME = {"unet": unet_original_name, "vae": vae_original_name, "text_encoder": text_original_name}
MODELS = {"unet": UNet3DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextEncoder}


def name_table(component: str, model) -> dict:
    """{our name: (original name, part)} for every tensor of ``model`` (part: see text_original_name)."""
    return {ours: name_table_entry(component, model, ours) for ours in model.state_dict()}


def name_table_entry(component, model, ours):
    theirs = ORIGINAL_NAME[component](ours, model.config)
    return theirs if isinstance(theirs, tuple) else (theirs, None)


# =========================================================================== sizes read from tensors
def vae_config_from(tensors: dict, source) -> dict:
    """The VAE's config from the shapes of its tensors (configuration.json does not give it)."""
    def shape(name):
        return _shape(tensors, VAE_PREFIX + name, source)

    levels = 0
    while VAE_PREFIX + f"encoder.down.{levels}.block.0.conv1.weight" in tensors:
        levels += 1
    if levels == 0:
        shape("encoder.down.0.block.0.conv1.weight")  # raises, naming it
    layers = 0
    while VAE_PREFIX + f"encoder.down.0.block.{layers}.conv1.weight" in tensors:
        layers += 1
    if any(k.startswith(VAE_PREFIX + "encoder.down.") and ".attn." in k for k in tensors):
        raise CheckpointError(f"{source}: the autoencoder has attention inside its down blocks "
                              "(attn_resolutions); this architecture has attention only in the middle block")
    z, embed = shape("post_quant_conv.weight")[:2]
    if z != embed:
        raise CheckpointError(f"{source}: tensor {VAE_PREFIX}post_quant_conv.weight has shape "
                              f"{shape('post_quant_conv.weight')}: z_channels {z} != embed_dim {embed}, "
                              "which this architecture does not support")
    return {"in_channels": shape("encoder.conv_in.weight")[1], "out_channels": shape("decoder.conv_out.weight")[0],
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(levels)],
            "layers_per_block": layers, "act_fn": "silu", "latent_channels": z, "norm_num_groups": GROUPS,
            "sample_size": 256, "scaling_factor": 0.18215}


def text_config_from(tensors: dict, source) -> dict:
    """The text encoder's config from the OpenCLIP tensors' shapes: width, vocabulary, positions,
    blocks (all but the last: the penultimate layer), MLP width; heads = width // 64."""
    vocab, width = _shape(tensors, "token_embedding.weight", source)
    blocks = 0
    while f"transformer.resblocks.{blocks}.ln_1.weight" in tensors:
        blocks += 1
    if blocks < 2:
        raise CheckpointError(f"{source}: {blocks} text blocks (transformer.resblocks.N); the penultimate "
                              "layer needs at least 2")
    if width % CLIP_HEAD_WIDTH:
        raise CheckpointError(f"{source}: text width {width} (token_embedding.weight) is not a multiple of "
                              f"OpenCLIP's head width {CLIP_HEAD_WIDTH}")
    return {"vocab_size": vocab, "hidden_size": width,
            "intermediate_size": _shape(tensors, "transformer.resblocks.0.mlp.c_fc.weight", source)[0],
            "num_hidden_layers": blocks - 1, "num_attention_heads": width // CLIP_HEAD_WIDTH,
            "max_position_embeddings": _shape(tensors, "positional_embedding", source)[0],
            "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def _shape(tensors, name, source):
    if name not in tensors:
        raise CheckpointError(f"{source}: missing tensor {name!r}")
    shape = tuple(tensors[name].shape)
    if not shape:
        raise CheckpointError(f"{source}: tensor {name!r} is a scalar")
    return shape


# =========================================================================== what a file holds
def tensors_of(obj, path, key=None) -> dict:
    """The name -> tensor dict inside what a file holds: ``obj[key]`` for a training checkpoint
    (``"state_dict"``), else ``obj``; entries that are not tensors (a planted object) are dropped."""
    if key is not None and isinstance(obj, dict) and isinstance(obj.get(key), dict):
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    kept = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, (torch.Tensor, LazyTensor))}
    if kept and all(k.startswith("module.") for k in kept):  # saved from a DistributedDataParallel wrapper
        kept = {k[len("module."):]: v for k, v in kept.items()}
    dropped = sorted(str(k) for k in obj if k not in kept)
    if dropped:
        warnings.warn(f"{path}: ignoring {len(dropped)} entries that are not tensors: {', '.join(dropped[:5])}",
                      stacklevel=3)
    return kept


# =========================================================================== loading the models
def gather(component: str, model, tensors: dict, source, ignored=(), on_tensor=None) -> dict:
    """Our state dict for ``model`` from the original ``tensors``: each of our names takes its original
    tensor (read now if lazy), reshaped where a 1x1 convolution became a linear layer, split where
    OpenCLIP fused q/k/v. One error lists every missing, wrong-shape or unexpected tensor by its
    original name (and ours). ``ignored(name)`` says which tensors of the file are not ours to read."""
    state, missing, wrong, used = {}, [], [], set()
    for ours, shape in ((k, tuple(v.shape)) for k, v in model.state_dict().items()):
        theirs, part = name_table_entry(component, model, ours)
        if theirs not in tensors:
            missing.append(f"{theirs} (t2vlab: {ours})")
            continue
        used.add(theirs)
        full = tuple(tensors[theirs].shape)
        want = (shape[0] * part[1], *shape[1:]) if part else shape
        if full != want and not _same_up_to_unit_dims(full, want):
            wrong.append(f"{theirs}: file {full} vs expected {want}")
            continue
        t = materialize(tensors[theirs])
        if on_tensor is not None:
            on_tensor(t.numel() * t.element_size() // (part[1] if part else 1))
        if part:
            t = t.reshape(want).chunk(part[1])[part[0]]
        state[ours] = t.reshape(shape)
    unexpected = sorted(k for k in tensors if k not in used and not ignored(k))
    problems = tensor_problems({"missing tensors": missing, "shape mismatches": wrong,
                                "unexpected tensors": unexpected})
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__} built from "
                              f"{'configuration.json' if component == 'unet' else 'its tensor shapes'}: {problems}")
    return state


def _same_up_to_unit_dims(a, b):
    strip = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    return strip(a) == strip(b) and len(a) != len(b)


def _ignored(component, config):
    if component == "vae":
        return lambda k: not k.startswith(VAE_PREFIX)  # the rest of the latent-diffusion model
    if component == "text_encoder":
        last = f"transformer.resblocks.{config['num_hidden_layers']}."  # the last block: not used
        return lambda k: k.startswith(("visual.", last)) or k in ("text_projection", "logit_scale", "logit_bias",
                                                                  "attn_mask")
    return lambda k: False


def read_component(original: OriginalCheckpoint, component: str):
    """(config, tensors) of one component: its file read (lazily) and its config."""
    path = original.files[component]
    obj = read_pickle(path)
    if component == "vae":
        tensors = tensors_of(obj, path, key="state_dict")
        if not any(k.startswith(VAE_PREFIX) for k in tensors) and "encoder.conv_in.weight" in tensors:
            tensors = {VAE_PREFIX + k: v for k, v in tensors.items()}  # a bare autoencoder state dict
        if not any(k.startswith(VAE_PREFIX) for k in tensors):
            raise CheckpointError(f"{path}: holds no {VAE_PREFIX}* tensors (the autoencoder of the "
                                  f"latent-diffusion checkpoint); is it {FILES['vae']}?")
        return vae_config_from(tensors, path), tensors
    if component == "text_encoder":
        tensors = tensors_of(obj, path, key="state_dict")
        return text_config_from(tensors, path), tensors
    return original.unet_config, tensors_of(obj, path)


def load_component(original: OriginalCheckpoint, component: str, torch_dtype=None, on_tensor=None):
    """One of our models from the original files: config, meta-device build, gather, load."""
    config, tensors = read_component(original, component)
    cls, path = MODELS[component], original.files[component]
    skeleton = cls._meta_model(config_from_dict(cls.config_class, config, source=str(path)), source=str(path))
    state = gather(component, skeleton, tensors, path, _ignored(component, config), on_tensor)
    del tensors, skeleton
    return cls.from_state_dict(config, state, path, torch_dtype=torch_dtype)


def load_original(folder, torch_dtype=None) -> dict:
    """The five components of a folder in the original layout (see the module docstring)."""
    original = read_configuration(folder)
    parts = {c: load_component(original, c, torch_dtype) for c in MODELS}
    parts["tokenizer"] = Tokenizer.open_clip(min(MAX_LENGTH, parts["text_encoder"].config.max_position_embeddings))
    parts["scheduler"] = scheduler_from_config(configs.SCHEDULER)  # DDIM with the original schedule
    return parts


# =========================================================================== convert once, load fast
def write_pipeline_files(folder, text_positions=None):
    """The files of the published layout besides the models: the tokenizer (CLIP's real vocabulary,
    padding to the text encoder's positions), the scheduler config (the original DDIM schedule) and
    model_index.json."""
    folder = Path(folder)
    Tokenizer.default(min(MAX_LENGTH, text_positions or MAX_LENGTH)).save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs.SCHEDULER, indent=2) + "\n")
    (folder / "model_index.json").write_text(json.dumps(configs.MODEL_INDEX, indent=2) + "\n")


def convert_original(folder, out, fp16=False, overwrite=False, progress=True, say=None) -> Path:
    """Write the original-layout ``folder`` in the published layout at ``out`` (safetensors,
    model_index.json, configs, tokenizer), loadable by t2vlab and by diffusers/transformers.

    One component at a time: read, converted, written, freed (peak memory: one component's tensors).
    ``fp16`` writes float16 weights under the plain file names. The output appears whole or not at all
    (written to a temporary sibling folder, renamed at the end). Refused before anything is read or
    written: an ``out`` that is ``folder``, holds it or lies inside it (ValueError), and an existing ``out``
    unless ``overwrite``, which replaces only a folder t2vlab wrote (``t2vlab.atomic``; ``say`` hears what
    will be removed). ``progress`` shows a bar over the bytes of the three files.
    """
    out = Path(out)
    check_apart(out, [folder], "convert: the output folder")
    if os.path.lexists(out):  # before reading gigabytes
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
        check_replaceable(out)
    original = read_configuration(folder)
    for path in original.files.values():
        if not path.is_file():
            raise not_a_file(path) or FileNotFoundError(f"{path}: named by {original.folder / CONFIGURATION} but "
                                                        "not found")
    sizes = {c: p.stat().st_size for c, p in original.files.items()}
    dtype = torch.float16 if fp16 else torch.float32
    bar = tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
               desc="converting")
    with bar, atomic_folder(out, overwrite, say) as tmp:
        positions = None
        for component in MODELS:
            start = bar.n
            bar.set_description(f"reading {component}")
            model = load_component(original, component, dtype, on_tensor=bar.update)
            if component == "text_encoder":
                positions = model.config.max_position_embeddings
            bar.set_description(f"writing {component}")
            model.save_pretrained(tmp / component)
            del model
            gc.collect()
            bar.update(max(start + sizes[component] - bar.n, 0))  # the parts of the file left unread
        write_pipeline_files(tmp, positions)
        bar.set_description("converted")
    return out


# =========================================================================== writing the original layout
def write_original(path, models: dict, max_frames=16, overwrite=False, extra_vae_state=None,
                   extra_vae_checkpoint=None) -> Path:
    """Write our ``models`` ({"unet", "vae", "text_encoder"}) in the original layout: the inverse of
    loading, for tests, notebooks and benchmarks that need such a folder (real ones are gigabytes).

    The UNet as a plain state dict; the VAE inside a training-checkpoint-like dict (``{"state_dict":
    {"first_stage_model.*": ...}}``, plus ``extra_vae_state`` inside the state dict and
    ``extra_vae_checkpoint`` beside it, as a Lightning checkpoint holds more); the text encoder as OpenCLIP's text
    tower with one more block than it uses (the "last" block the penultimate layer skips, written as
    zeros), with a text projection and a logit scale but no image tower. Atomic like every writer of the
    package. ModelScope's own UNetSD hard-codes a 1024-wide text context in its up blocks; t2vlab reads
    ``unet_context_dim`` and checks every tensor, so small models with a narrower context load here.
    """
    unet, vae, text = models["unet"], models["vae"], models["text_encoder"]
    cfg = unet.config
    base = cfg.block_out_channels[0]
    if any(c % base for c in cfg.block_out_channels) or cfg.norm_num_groups != GROUPS:
        raise ValueError("the original layout needs block_out_channels that are multiples of the first and "
                         f"norm_num_groups={GROUPS}")
    scales = [2.0 ** -i for i, t in enumerate(cfg.down_block_types) if t.startswith("CrossAttn")]
    model_cfg = {"unet_in_dim": cfg.in_channels, "unet_dim": base, "unet_y_dim": 768,
                 "unet_context_dim": cfg.cross_attention_dim, "unet_out_dim": cfg.out_channels,
                 "unet_dim_mult": [c // base for c in cfg.block_out_channels], "unet_num_heads": TRANSFORMER_IN_HEADS,
                 "unet_head_dim": cfg.attention_head_dim, "unet_res_blocks": cfg.layers_per_block,
                 "unet_attn_scales": [int(s) if s == 1 else s for s in scales], "unet_dropout": 0.1,
                 "temporal_attention": "True", "num_timesteps": 1000, "mean_type": "eps",
                 "var_type": "fixed_small", "loss_type": "mse"}
    configuration = {"framework": "pytorch", "task": "text-to-video-synthesis", "model": {
        "type": "latent-text-to-video-synthesis",
        "model_args": {"ckpt_clip": FILES["text_encoder"], "ckpt_unet": FILES["unet"],
                       "ckpt_autoencoder": FILES["vae"], "max_frames": max_frames, "tiny_gpu": 1},
        "model_cfg": model_cfg}, "pipeline": {"type": "latent-text-to-video-synthesis"}}
    with atomic_folder(path, overwrite) as tmp:
        (tmp / CONFIGURATION).write_text(json.dumps(configuration, indent=4) + "\n")
        torch.save(_original_state("unet", unet), tmp / FILES["unet"])
        torch.save({"state_dict": {**_original_state("vae", vae), **(extra_vae_state or {})},
                    **(extra_vae_checkpoint or {})}, tmp / FILES["vae"])
        clip = _original_state("text_encoder", text)
        last = text.config.num_hidden_layers
        for k in [k for k in clip if k.startswith("transformer.resblocks.0.")]:
            clip[k.replace(".0.", f".{last}.", 1)] = torch.zeros_like(clip[k])
        width = text.config.hidden_size  # the rest of OpenCLIP's text side (its image tower is left out)
        clip.update(text_projection=torch.zeros(width, width), logit_scale=torch.tensor(4.6052))
        torch.save(clip, tmp / FILES["text_encoder"])
    return Path(path)


def _original_state(component, model) -> dict:
    """``model``'s tensors under the original names and shapes (q/k/v fused back, linear -> 1x1 conv)."""
    state, fused = {}, {}
    for ours, t in model.state_dict().items():
        theirs, part = name_table_entry(component, model, ours)
        t = t.detach().contiguous().cpu()
        if part:
            fused.setdefault(theirs, [None] * part[1])[part[0]] = t
            continue
        temporal = r"(transformer_in|.*temp_attentions\.\d+)\.proj_(in|out)\.weight"
        if component == "unet" and re.fullmatch(temporal, ours):
            t = t[..., None]  # temporal transformers: a 1x1 Conv1d there
        elif component == "vae" and re.fullmatch(r".*attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight", ours):
            t = t[..., None, None]  # the VAE's attention: 1x1 Conv2d there
        state[theirs] = t
    state.update({k: torch.cat(v) for k, v in fused.items()})
    return state


# =========================================================================== tiny checkpoints
def tiny_models(sizes: dict, seed=0) -> dict:
    """{"unet", "vae", "text_encoder"} built from the configs ``sizes`` holds, with random weights drawn from
    ``seed`` (always in this order, so that a seed always gives the same weights): the tiny checkpoints of both
    layouts (this one's below, the published one's in ``t2vlab.weights``) are these models, written."""
    torch.manual_seed(seed)
    return {name: cls.from_config(sizes[name]) for name, cls in MODELS.items()}


# tiny models the original layout can hold (GroupNorm 32 everywhere; OpenCLIP heads 64 wide)
TINY_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=8,
                 norm_num_groups=GROUPS, cross_attention_dim=64,
                 down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"))
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=GROUPS,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_TEXT = dict(hidden_size=CLIP_HEAD_WIDTH, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=1)
TINY_SIZES = {"unet": TINY_UNET, "vae": TINY_VAE, "text_encoder": TINY_TEXT}


def make_tiny_original_checkpoint(path, seed=0, overwrite=False) -> Path:
    """A tiny checkpoint (random weights drawn from ``seed``) in the original ModelScope layout, about
    16 MB (the text tower's 49,408-token embedding is most of it): for trying the converter."""
    if os.path.lexists(path):  # before building anything
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        check_replaceable(path)
    return write_original(path, tiny_models(TINY_SIZES, seed), max_frames=8, overwrite=overwrite)
