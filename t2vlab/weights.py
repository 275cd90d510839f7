"""Where weights come from: a local folder, the Hugging Face Hub, or a checkpoint shipped with t2vlab.

    folder = resolve_checkpoint("toy")              # the embedded trained toy model
    parts  = load_components(folder, torch.float16, variant="fp16")   # the five components

Names a user can pass:

- a local folder in the published (diffusers) layout, or in the original ModelScope layout
  (``configuration.json`` + ``text2video_pytorch_model.pth`` + ``VQGAN_autoencoder.pth`` +
  ``open_clip_pytorch_model.bin``), converted on the way in by ``t2vlab.original``;
- a Hub id such as ``damo-vilab/text-to-video-ms-1.7b``: downloaded once (only the files needed: the
  requested variant's weights, safetensors when present), or read from the Hub cache offline;
- an embedded checkpoint: ``"toy-trained"`` (alias ``"toy"``), the real architecture at a toy size
  trained by t2vlab on coloured shapes, shipped in ``t2vlab/data/toy``; ``"tiny-random"`` (alias
  ``"tiny"``), the same size with random weights, written to the cache on first use.

Each checkpoint carries the settings it is meant to run at (``recommended_settings``), so the CLI,
the studio and the notebooks need no special cases. ``KNOWN_CHECKPOINTS`` lists the family: the
fine-tunes share ms-1.7b's UNet config (``sample_size`` 32, i.e. 256x256) but were trained at other
sizes and lengths, which are their defaults here.

The variant rule: ``variant="fp16"`` picks the ``*.fp16.*`` weight files. A checkpoint with only one
set of weights (the embedded ones, most fine-tunes) has no variants: its weights are loaded and cast
to ``torch_dtype``, and a note says so once. A checkpoint that has other variants but not the asked
one is an error naming what it has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path

import torch

try:
    import fcntl  # POSIX: the lock beside the tiny checkpoint that its builders take turns with (_lock_beside)
except ImportError:  # Windows: no lock; the build is still whole (atomic_folder), only perhaps done twice
    fcntl = None

from . import configs, original
from .atomic import atomic_folder, check_replaceable
from .checkpoint import (
    DIFFUSERS_WEIGHTS,
    TRANSFORMERS_WEIGHTS,
    CheckpointError,
    read_json,
    weight_candidates,
)
from .original import tiny_models, write_pipeline_files
from .schedulers import from_config as scheduler_from_config
from .text_encoder import CLIPTextEncoder
from .tokenizer import Tokenizer
from .unet import UNet3DConditionModel
from .vae import AutoencoderKL

logger = logging.getLogger("t2vlab")

REAL_CHECKPOINT = "damo-vilab/text-to-video-ms-1.7b"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_STEMS = {"unet": DIFFUSERS_WEIGHTS, "vae": DIFFUSERS_WEIGHTS, "text_encoder": TRANSFORMERS_WEIGHTS}
# a checkpoint saved by diffusers' video-to-video pipeline holds the same five components
EXPECTED_CLASSES = {"_class_name": ("TextToVideoSDPipeline", "VideoToVideoSDPipeline"),
                    "unet": ("UNet3DConditionModel",), "vae": ("AutoencoderKL",), "text_encoder": ("CLIPTextModel",)}
MODEL_INDEX = configs.MODEL_INDEX
MODELS = ("unet", "vae", "text_encoder")  # the components with weights (and so a dtype)
# what a pipeline may be without (None): a run from prompt_embeds needs no text encoder or tokenizer, a run
# returning output_type="latent" no VAE (each call says which component it needs)
OPTIONAL_COMPONENTS = ("text_encoder", "tokenizer", "vae")


# ------------------------------------------------------------------------ what each checkpoint is for
@dataclasses.dataclass(frozen=True)
class Recommended:
    """The settings a checkpoint is meant to run at, and a prompt it knows how to draw."""

    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float = 9.0
    scheduler: str = "dpm++"
    prompt: str = "an astronaut riding a horse on the moon"
    description: str = ""


TOY = Recommended(64, 64, 8, 25, 9.0, "dpm++", "a red circle moving right", (
    "the embedded toy checkpoint: the real architecture at a toy size, TRAINED by t2vlab on a synthetic "
    "world of coloured shapes ('a red circle moving left'). It runs in about a second on a CPU and draws the "
    "colour you ask for (red/green/blue/yellow) as a shape gliding across the frame the way the prompt names "
    "(left/right/up/down), trailing a fading streak. See notebook 10."))
TINY = Recommended(64, 64, 8, 10, 9.0, "dpm++", "a panda playing a guitar", (
    "the embedded tiny checkpoint: the real architecture at a toy size with RANDOM weights. Everything runs in "
    "seconds on a CPU, shapes and code paths are the real ones, but it has learnt nothing, so its 'videos' are "
    "noise."))
MS = ("ModelScope's text-to-video model (1.7 B parameters): real, trained weights, general purpose. It needs a "
      "GPU and downloads about 3.6 GB (the float16 files) from the Hugging Face Hub on first use.")
ORIGINAL = Recommended(256, 256, 16, 50, 9.0, "ddim", "a panda playing a guitar", (
    "ModelScope's text-to-video model in its original layout (configuration.json, text2video_pytorch_model.pth, "
    "VQGAN_autoencoder.pth, open_clip_pytorch_model.bin), converted on loading; run with the original "
    "pipeline's DDIM, 50 steps, guidance 9. `python -m t2vlab convert` writes the published layout once."))
# Hub id -> settings. Sizes and frame counts as the authors published them (model cards; the ids and sizes
# as the Blender text2video/Pallaidium add-on and sd-webui-text2video list them); the fine-tunes keep
# ms-1.7b's UNet config, so without this table they would run at 256x256.
KNOWN_CHECKPOINTS = {
    REAL_CHECKPOINT: Recommended(256, 256, 16, 25, 9.0, "dpm++", "Spiderman is surfing", MS),
    "damo-vilab/text-to-video-ms-1.7b-legacy": Recommended(256, 256, 16, 25, 9.0, "dpm++", "Spiderman is surfing", (
        "ms-1.7b's older weights (the first release), in the published layout: 256x256, 16 frames.")),
    "ali-vilab/modelscope-damo-text-to-video-synthesis": dataclasses.replace(ORIGINAL, description=(
        "ModelScope's own release of ms-1.7b (the same weights), in the original layout; converted on loading, "
        "run with the original pipeline's DDIM, 50 steps, guidance 9.")),
    "cerspense/zeroscope_v2_576w": Recommended(320, 576, 24, 25, 9.0, "dpm++", "a clown fish swimming in a coral "
                                               "reef, cinematic", (
        "zeroscope v2 576w (cerspense): ms-1.7b fine-tuned on 576x320 clips of 24 frames, without the stock "
        "footage watermark; widescreen, the usual first stage before zeroscope_v2_XL.")),
    "cerspense/zeroscope_v2_XL": Recommended(576, 1024, 24, 25, 9.0, "dpm++", "a clown fish swimming in a coral "
                                             "reef, cinematic", (
        "zeroscope v2 XL (cerspense): ms-1.7b fine-tuned at 1024x576, 24 frames; meant for upscaling a "
        "576w video (video-to-video at strength ~0.7) rather than text-to-video from noise. Needs ~15 GB.")),
    "cerspense/zeroscope_v2_dark_30x448x256": Recommended(256, 448, 30, 25, 9.0, "dpm++", "a lighthouse at night "
                                                          "in a storm", (
        "zeroscope v2 dark (cerspense): fine-tuned at 448x256 with 30 frames on darker, moodier footage.")),
    "camenduru/potat1": Recommended(576, 1024, 24, 25, 9.0, "dpm++", "a bear walking through a forest", (
        "potat1 (camenduru): the first open 1024x576 fine-tune of ms-1.7b; high resolution, needs a large GPU.")),
    "strangeman3107/animov-0.1.1": Recommended(384, 448, 16, 25, 9.0, "dpm++", "anime, a girl walking in the rain", (
        "animov 0.1.1 (strangeman3107): fine-tuned on anime clips at 448x384; put 'anime' in the prompt. "
        "Frame count not published: the base model's 16.")),
    "strangeman3107/animov-512x": Recommended(512, 512, 16, 25, 9.0, "dpm++", "anime, a girl walking in the rain", (
        "animov 512x (strangeman3107): the anime fine-tune at 512x512; put 'anime' in the prompt. Frame count "
        "not published: the base model's 16.")),
}
# Distilled adapters for ms-1.7b: (Hub id, the file or PEFT folder inside it) -> the settings they run at. While
# one is loaded and active, ``TextToVideoPipeline.recommended`` takes its sampler, steps, guidance and
# description instead of the checkpoint's (the size and frames stay the checkpoint's): ``adapter_settings``.
MCM_SUBFOLDERS = ("webvid", "laion", "anime", "real", "3d-cartoon")
MCM = ("MCM, the motion consistency model (Zhai et al. 2024, yhZhai/mcm), {}: a LoRA (rank 64, a PEFT adapter "
       "folder) distilled from ms-1.7b for 4 steps without classifier-free guidance (guidance 1.0), sampled with "
       "LCM's scheduler at timestep_scaling 4 ('lcm-mcm'), as its authors run it.")
T2V_TURBO = ("T2V-Turbo-MS (Li et al. 2024, Ji4chenLi/t2v-turbo): a LoRA (rank 32, a list file) distilled from "
             "ms-1.7b with reward feedback, for a UNet with a guidance embedding: call "
             "t2vlab.techniques.consistency.add_guidance_embedding(pipe.unet, 256) before loading it (the "
             "embedding's base weight is random in T2V-Turbo's code; here it is drawn from seed 0). 4 steps at "
             "T2V-Turbo's timesteps 999, 759, 519, 279 ('lcm-t2v-turbo'), the guidance w = 7.5 fed as the "
             "embedding: one UNet pass per step, no classifier-free guidance.")
KNOWN_ADAPTERS = {
    **{("yhzhai/mcm", f"modelscopet2v-{v}"): dict(scheduler="lcm-mcm", num_inference_steps=4, guidance_scale=1.0,
                                                  description=MCM.format(f"modelscopet2v-{v}"))
       for v in MCM_SUBFOLDERS},
    ("jiachenli-ucsb/T2V-Turbo-MS", "unet_lora.pt"): dict(scheduler="lcm-t2v-turbo", num_inference_steps=4,
                                                          guidance_scale=7.5, description=T2V_TURBO),
}


def adapter_settings(settings, sources) -> Recommended:
    """``settings`` (a checkpoint's) with those of the first known distilled adapter among ``sources`` (where the
    active adapters came from: (Hub id, file or folder) or a path), if any."""
    known = next((KNOWN_ADAPTERS[s] for s in sources if s in KNOWN_ADAPTERS), None)
    return settings if known is None else dataclasses.replace(settings, **known)


EMBEDDED = {"toy-trained": TOY, "tiny-random": TINY}  # canonical names say what the weights are
ALIASES = {"toy": "toy-trained", "tiny": "tiny-random"}


def embedded_name(name_or_path) -> str | None:
    """The canonical name of an embedded checkpoint ("toy" -> "toy-trained"), or None. The shipped toy
    folder, given as a path, counts as "toy-trained"."""
    name = str(name_or_path)
    name = ALIASES.get(name, name)
    if name in EMBEDDED:
        return name
    try:
        if Path(name_or_path).resolve() == toy_checkpoint():
            return "toy-trained"
    except (OSError, TypeError, FileNotFoundError):
        pass
    return None


def hub_id_of(name_or_path) -> str | None:
    """The Hub id a name stands for: the name itself when it looks like one ("owner/name"), or, for a
    folder inside the Hub cache (``.../models--OWNER--NAME/snapshots/<hash>``), the id it was downloaded as."""
    name = os.fspath(name_or_path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).is_dir():
        return name
    parts = Path(name).expanduser().parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots" and part.count("--") >= 2:
            return part[len("models--"):].replace("--", "/", 1)
    return None


def recommended_settings(name_or_path, unet_config=None, spatial_factor=8) -> Recommended:
    """The settings for a checkpoint: its own when it is embedded or known (by Hub id, also when it
    comes from the Hub cache), the original pipeline's for a folder in the original layout, else the
    UNet's ``sample_size`` with the published model's frames and steps (pass height/width yourself)."""
    name = embedded_name(name_or_path)
    if name is not None:
        return EMBEDDED[name]
    known = KNOWN_CHECKPOINTS.get(hub_id_of(name_or_path) or "")
    if known is not None:
        return known
    size = (unet_config.sample_size if unet_config is not None else 32) * spatial_factor
    try:
        if original.is_original(name_or_path):
            frames = original.read_configuration(name_or_path).max_frames
            return dataclasses.replace(ORIGINAL, height=size, width=size, num_frames=frames)
    except (OSError, TypeError, ValueError):
        pass
    return dataclasses.replace(KNOWN_CHECKPOINTS[REAL_CHECKPOINT], height=size, width=size, prompt="a panda "
                               "playing a guitar", description=f"{name_or_path}, a checkpoint in the published layout.")


# ------------------------------------------------------------------------------- embedded checkpoints
def toy_checkpoint() -> Path:
    """The shipped toy checkpoint's folder (t2vlab/data/toy)."""
    path = Path(__file__).resolve().parent / "data" / "toy"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"the toy checkpoint is missing from {path}; train it with "
                                "`python -m t2vlab.toy.train --out t2vlab/data/toy`")
    return path


TINY_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=8,
                 norm_num_groups=8, cross_attention_dim=32,
                 down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"))
TINY_VAE = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=64,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_SIZES = {"unet": TINY_UNET, "vae": TINY_VAE, "text_encoder": TINY_TEXT}
SCHEDULER_CONFIG = configs.SCHEDULER  # the published one
FP32, FP16_VARIANT = (None, torch.float32), ("fp16", torch.float16)


def write_checkpoint(path, models, overwrite=False, variants=(None,), extra=None):
    """Write ``models`` ({"unet", "vae", "text_encoder"}), the real-vocabulary tokenizer, the published
    scheduler config and model_index.json to ``path`` in the published layout; return it as a Path.

    ``variants``: variant names (None: float32 under the plain file names; "fp16": the float16 variant)
    or (name, dtype) pairs such as (None, torch.float16) for float16 weights under the plain names.
    The folder appears whole or not at all: everything is written to a temporary sibling folder
    that is renamed into place at the end. An existing ``path`` is an error unless ``overwrite``, which
    replaces only a folder t2vlab wrote (``t2vlab.atomic.check_replaceable``).
    """
    path = Path(path)
    with atomic_folder(path, overwrite) as tmp:
        dtypes = dict([FP32, FP16_VARIANT])
        for name, model in models.items():
            for variant, dtype in (v if isinstance(v, tuple) else (v, dtypes[v]) for v in variants):
                model.to(dtype).save_pretrained(tmp / name, variant=variant)
        text_encoder = models.get("text_encoder")  # the tokenizer pads to as many positions as it has
        write_pipeline_files(tmp, None if text_encoder is None else text_encoder.config.max_position_embeddings)
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
    return path


def make_tiny_checkpoint(path, seed=0, overwrite=False, variants=(None, "fp16")):
    """Write a complete tiny checkpoint (random weights, drawn from ``seed``) to ``path``; see write_checkpoint."""
    if os.path.lexists(path):  # before building anything
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        check_replaceable(path)
    return write_checkpoint(path, tiny_models(TINY_SIZES, seed), overwrite=overwrite, variants=variants)


def cache_dir() -> Path:
    root = os.environ.get("T2VLAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "t2vlab"
    return Path(root)


@contextlib.contextmanager
def _lock_beside(path: Path):
    """Hold an exclusive lock on the empty file ``.NAME.lock`` beside ``path`` while the block runs, so that
    processes building the same thing (``pytest -n`` workers, two notebooks) take turns. Where no lock can be
    had (no ``fcntl``, as on Windows; a folder that cannot be written; a file system without locks) the block
    runs unlocked: what it builds must still be safe without the lock (``atomic_folder``), the lock only saves
    the others from building it again."""
    fd = None
    if fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)  # never written to
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed, also when the process dies
        except OSError:  # a folder that cannot be written, a file system without locks: unlocked
            pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def tiny_checkpoint(seed=0) -> Path:
    """The tiny checkpoint's folder in the cache, built on first use, once for all processes that ask at the
    same time: the first to take the lock beside it builds it (into a temporary folder renamed into place
    whole, ``atomic_folder``), the others wait and then find it there. Without a lock each builds its own copy,
    and one whose rename finds the winner's folder there uses that one (the same seed: the same weights)."""
    path = cache_dir() / f"tiny-seed{seed}"
    if (path / "model_index.json").is_file():
        return path
    with _lock_beside(path):
        if not (path / "model_index.json").is_file():
            try:
                make_tiny_checkpoint(path, seed=seed, overwrite=path.exists())
            except OSError:  # unlocked: another process finished it first
                if not (path / "model_index.json").is_file():
                    raise
    return path


# ----------------------------------------------------------------------------------------- the Hub
def _variants_of(names) -> set:
    """The variant tags among weight file names: 'text_encoder/model.fp16.safetensors' -> {'fp16'}."""
    found = set()
    for name in names:
        base = Path(name).name
        for stem in (*DIFFUSERS_WEIGHTS, *TRANSFORMERS_WEIGHTS):
            for ext in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"):
                if base.startswith(stem + ".") and base.endswith(ext) and len(base) > len(stem) + 1 + len(ext):
                    found.add(base[len(stem) + 1:-len(ext)])  # stem.VARIANT.ext
    return found


def choose_variant(names, variant, where, torch_dtype=None):
    """The variant to load given the weight file names a checkpoint has (see the module docstring):
    ``variant`` when present; None, with a note saying what is loaded instead, when the checkpoint has no
    variants at all (its one set of weights, cast to ``torch_dtype``, or float32 without one)."""
    if not variant:
        return None
    have = _variants_of(names)
    if variant in have:
        return variant
    if have:
        raise FileNotFoundError(f"{where}: no weights for variant={variant!r} (it has the variants "
                                f"{', '.join(sorted(have))}, and plain weights)")
    if torch_dtype is None:
        what = "loading those in float32, the default without torch_dtype (pass torch_dtype=torch.float16 too for " \
               "half precision)"
    else:
        what = f"loading those and casting them to {torch_dtype}"
    warnings.warn(f"{where} has one set of weights and no {variant!r} variant: {what}", stacklevel=3)
    return None


def hub_allow_patterns(repo_files, variant=None):
    """Which files of a Hub repository to download: the configs, the tokenizer and, for each model,
    the requested variant's weights, safetensors when the repository has them, else .bin."""
    files = set(repo_files)
    if original.CONFIGURATION in files and "model_index.json" not in files:  # the original layout
        return [original.CONFIGURATION] + sorted(f for f in files if "/" not in f and f.endswith((".pth", ".bin")))
    weight_files = [f for f in files if f.split("/")[0] in WEIGHT_STEMS]
    variant = choose_variant(weight_files, variant, "the repository")
    patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*", "*/config.json"]
    for component, stems in WEIGHT_STEMS.items():
        for name in weight_candidates(stems, variant):
            if f"{component}/{name}" in files:
                patterns.append(f"{component}/{name}")
                if name.endswith(".index.json"):  # a sharded file: its shards too
                    patterns.append(f"{component}/{name.split('.')[0]}*")
                break
        else:
            have = sorted(f for f in files if f.startswith(component + "/"))
            raise FileNotFoundError(f"{component}: no weights for variant={variant!r} in the repository "
                                    f"(it has {', '.join(have) or 'no such folder'})")
    return patterns


def resolve_checkpoint(name_or_path, variant=None, local_files_only=False) -> Path:
    """A local folder as is; an embedded name ("toy-trained"/"toy", "tiny-random"/"tiny") -> its folder;
    else a Hub repository id, downloaded (only the needed files) or taken from the Hub cache offline."""
    name = os.fspath(name_or_path)
    embedded = ALIASES.get(name, name)
    if embedded == "tiny-random":
        return tiny_checkpoint()
    if embedded == "toy-trained":
        return toy_checkpoint()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"checkpoint not found: {name!r} is neither a folder nor a Hub id like "
                                f"'{REAL_CHECKPOINT}'")
    import huggingface_hub  # imported here: only a Hub id needs it, and it is slow to import

    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    patterns = None if offline else hub_allow_patterns(huggingface_hub.list_repo_files(name), variant)
    try:
        return Path(huggingface_hub.snapshot_download(name, allow_patterns=patterns, local_files_only=offline))
    except Exception as e:  # no network, not in cache, gated...: say what to do
        how = "it is not in the local Hub cache (offline mode)" if offline else f"the download failed ({e})"
        raise FileNotFoundError(f"cannot get {name!r}: {how}. Download it once with network access, or pass "
                                f"a local folder, or use 'toy' for the embedded trained toy checkpoint.") from e


# ------------------------------------------------------------------------------------ loading a folder
def check_architecture(folder: Path) -> set:
    """Refuse a checkpoint that is not this architecture, naming what was found; return the components its
    model_index.json names as absent (``absent_components``)."""
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else None
    if index is None and (folder / original.CONFIGURATION).is_file():
        raise CheckpointError(f"{folder}: its configuration.json is not ModelScope's text-to-video one (no "
                              "model.model_cfg / model.model_args), and there is no model_index.json")
    if index is None:
        raise FileNotFoundError(f"{folder}: no model_index.json (published layout) and no configuration.json "
                                "(original ModelScope layout); not a pipeline checkpoint folder")
    if not isinstance(index, dict):
        raise CheckpointError(f"{folder / 'model_index.json'}: expected a JSON object, got {type(index).__name__}")
    found = {"_class_name": index.get("_class_name")}
    absent = absent_components(index)
    for comp in ("unet", "vae", "text_encoder"):
        entry = index.get(comp)
        found[comp] = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else entry
    wrong = {k: v for k, v in found.items() if v not in EXPECTED_CLASSES[k] and k not in absent}
    if wrong:
        what = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise CheckpointError(f"{folder} is not a ModelScope text-to-video checkpoint: found {what}; expected "
                              f"TextToVideoSDPipeline with UNet3DConditionModel, AutoencoderKL and CLIPTextModel")
    for comp in COMPONENTS:
        if comp not in absent and not (folder / comp).is_dir():
            raise FileNotFoundError(f"{folder}: component folder {comp}/ is missing")
    return absent


def absent_components(index: dict) -> set:
    """The components a model_index.json names as absent ([null, null], as diffusers writes a pipeline saved
    without them); only the optional ones may be."""
    absent = {c for c in COMPONENTS if c in index and index[c] in (None, [None, None])}
    required = sorted(absent - set(OPTIONAL_COMPONENTS))
    if required:
        raise CheckpointError(f"model_index.json names no {required[0]} ([null, null]); a pipeline cannot run "
                              f"without one (only {', '.join(OPTIONAL_COMPONENTS)} may be absent)")
    return absent


def component_dtypes(torch_dtype) -> dict:
    """{model: dtype or None (float32)} from ``torch_dtype`` as diffusers takes it: None, one floating torch.dtype
    for every model, or a dict {"unet": torch.float16, "default": torch.float32} naming models, "default" for the
    rest (float32 without one). ValueError naming a key that is no model or a value that is no floating dtype."""
    def floating(name, v):
        if v is not None and not (isinstance(v, torch.dtype) and v.is_floating_point):
            raise ValueError(f"{name} must be a floating torch.dtype such as torch.float16, got {v!r:.80}")
        return v

    if not isinstance(torch_dtype, dict):
        return dict.fromkeys(MODELS, floating("torch_dtype", torch_dtype))
    unknown = [k for k in torch_dtype if k not in (*MODELS, "default")]
    if unknown:
        why = " holds no weights" if unknown[0] in COMPONENTS else " is no component of this pipeline"
        raise ValueError(f"torch_dtype: the key {unknown[0]!r}{why}; the keys are the models "
                         f"{', '.join(MODELS)} and 'default' (for those not named)")
    default = floating("torch_dtype['default']", torch_dtype.get("default"))
    return {m: floating(f"torch_dtype[{m!r}]", torch_dtype.get(m, default)) for m in MODELS}


def load_components(folder, torch_dtype=None, variant=None, skip=()) -> dict:
    """The five components of a checkpoint folder, every model built on the meta device and then
    given its weights: {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} (None for one its
    model_index.json names as absent), without the names in ``skip`` (the caller brings those).
    ``torch_dtype``: one dtype, or a dict per model with a "default" (``component_dtypes``). A folder in the
    original ModelScope layout is converted on the way (``t2vlab.original``; it has no variants)."""
    folder = Path(folder)
    dtypes = component_dtypes(torch_dtype)
    if original.is_original(folder):
        choose_variant([], variant, str(folder), torch_dtype)  # one set of weights: cast, with a note
        per_model = isinstance(torch_dtype, dict)  # then loaded in float32 and each model cast to its own
        parts = original.load_original(folder, None if per_model else torch_dtype)
        return {c: v.to(dtypes[c] or torch.float32) if per_model and c in MODELS else v
                for c, v in parts.items() if c not in skip}
    absent = check_architecture(folder)
    wanted = [c for c in COMPONENTS if c not in skip and c not in absent]
    names = [f"{c}/{p.name}" for c in WEIGHT_STEMS if c in wanted for p in (folder / c).iterdir()]
    variant = choose_variant(names, variant, str(folder), torch_dtype)
    models = {"unet": UNet3DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextEncoder}

    def load(c):
        if c in models:
            return models[c].from_pretrained(folder, subfolder=c, torch_dtype=dtypes[c], variant=variant)
        if c == "tokenizer":
            return Tokenizer.from_pretrained(folder, subfolder="tokenizer")
        return scheduler_from_config(read_json(folder / "scheduler" / "scheduler_config.json"))

    return {c: load(c) if c in wanted else None for c in COMPONENTS if c not in skip}
