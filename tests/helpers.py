"""Shared test helpers: random parameter filling, relative error, a writer that fails half-way, a pickle payload,
the Hub cache's layout, and the small cases that a component's unit tests (tests/test_*.py) and its parity tests
(tests/parity/) both use."""

from __future__ import annotations

import importlib.util
import inspect
import math
import shutil
import socket
from pathlib import Path

import torch

from t2vlab import TextToVideoPipeline, configs


def randomize_(module: torch.nn.Module, seed=0, std=0.3) -> torch.nn.Module:
    """Fill every parameter with random values.

    The published architecture zero-initialises some layers (the temporal convolutions' last layer,
    the temporal transformers' output projection in the original code): left at zero, they would
    hide a wrong temporal path from a parity test. Norm scales are drawn around 1 so activations
    keep a sensible size through deep stacks.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            is_norm_scale = p.ndim == 1 and ("norm" in name) and name.endswith("weight")
            p.copy_((1.0 + 0.1 * r) if is_norm_scale else std * r / max(1.0, (p[0].numel() ** 0.5) / 3))
    return module


def tiny_pipe(seed, std=0.3):
    """The embedded tiny pipeline with its UNet re-drawn (``randomize_``: no zero-initialised layer hides a
    path), progress bar off: the module fixture of the tests that run whole generations on it."""
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    randomize_(pipe.unet, seed=seed, std=std)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fails_half_way(path_arg=1):
    """A stand-in for a writer (``safetensors.torch.save_file``, ``torch.save``, ``Image.Image.save``: the path is
    argument 1; ``Path.write_bytes``: argument 0) that writes a few bytes where it was told to and then raises,
    as a full disk does: what a test of "an interrupted write leaves the old file and nothing else" injects."""
    def write(*args, **kwargs):
        with open(args[path_arg], "w") as f:  # not through Path's methods, which a test may have replaced
            f.write("half")
        raise OSError(28, "No space left on device (injected)")

    return write


class CreatesAFile:
    """Unpickling this calls open(path, "w"): the file appearing would mean pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the Hub cache names a snapshot


def hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out in ``root`` as huggingface_hub's cache holds a download of ``repo_id`` (the fixture
    ``offline_cache`` gives a ``root`` that huggingface_hub reads, offline); returns the snapshot folder."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return repo / "snapshots" / SNAPSHOT


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error used by every parity test."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------- cases shared by unit and parity
# A component's unit tests and its parity tests use the same tiny configurations and inputs; they live
# here so that neither test module imports the other.

# schedulers: a deterministic stand-in for the UNet and the trajectory it drives
SCHEDULER_CKPT = dict(configs.SCHEDULER)  # the published scheduler/scheduler_config.json
SCHEDULER_SHAPE = (1, 4, 3, 4, 5)  # (batch, channels, frames, height, width), like the video latents
_BASE = torch.randn(SCHEDULER_SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
_LATENTS = torch.randn(SCHEDULER_SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def fake_model(x, t):
    """Deterministic stand-in for the UNet: depends on the input and the timestep."""
    tt = float(t)
    return 0.8 * _BASE.to(x.dtype) * math.cos(tt / 300) + 0.3 * torch.tanh(x) * math.sin(tt / 170 + 0.3)


def trajectory(sched, n, dtype, step_kwargs, seed=0, **set_timesteps_kwargs):
    """Timesteps, initial latents, then (prev_sample, pred_original_sample) of every step (``denoised``
    where the scheduler calls it that: diffusers' LCMScheduler). Extra keywords go to ``set_timesteps``."""
    sched.set_timesteps(n, **set_timesteps_kwargs)
    accepts_generator = "generator" in inspect.signature(sched.step).parameters
    g = torch.Generator().manual_seed(seed)
    x = _LATENTS.to(dtype) * sched.init_noise_sigma
    out = {"timesteps": sched.timesteps.clone(), "init": x, "samples": [], "x0": []}
    for t in sched.timesteps:
        model_output = fake_model(sched.scale_model_input(x, t), t)
        kwargs = dict(step_kwargs, generator=g) if accepts_generator else dict(step_kwargs)
        res = sched.step(model_output, t, x, **kwargs)
        x = res.prev_sample
        assert x.dtype == dtype
        out["samples"].append(x)
        out["x0"].append(getattr(res, "pred_original_sample", getattr(res, "denoised", None)))
    return out


# UNet: three small configurations of different depths, widths and head sizes
UNET_CONFIGS = {
    "two-levels": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8,
                       norm_num_groups=8, cross_attention_dim=16,
                       down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                       up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
    "three-levels-2-layers": dict(block_out_channels=(16, 32, 32), layers_per_block=2, attention_head_dim=8,
                                  norm_num_groups=4, cross_attention_dim=24,
                                  down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")),
    "four-levels-wide-heads": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, attention_head_dim=16,
                                   norm_num_groups=8, cross_attention_dim=32),
}

# VAE: 2 levels with attention and quant convs
VAE_TINY = dict(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8, layers_per_block=1, sample_size=32)

# text: "a photo of a cat" in CLIP's vocabulary, and a tiny 3-layer text encoder with its inputs
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
TEXT_TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                 max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def text_inputs(batch=3, seed=1):
    """(input_ids, attention_mask) for TEXT_TINY: prompts of 5, 30 and 77 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, 77), generator=g)
    lengths = [5, 30, 77][:batch]
    mask = (torch.arange(77)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


def load_file_module(path, name):
    """A Python file that is not in a package (tools/gallery.py, notebooks/conftest.py), imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_code(main, argv) -> int:
    """What a command's ``main(argv)`` exits with: its return value, or the code of the SystemExit its argument
    parser raised (argparse exits 2 on a bad flag, having printed the message)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def turbo_list(unet, seed=2, rank=32):
    """The list T2V-Turbo's ``save_lora_weight`` writes: [up, down] per layer in its order, as float32 Parameters,
    the rank clamped to the layer's width as their LoraInjected* layers clamp it."""
    from t2vlab.lora import list_layers

    g, tensors = torch.Generator().manual_seed(seed), []
    for path in list_layers(unet):
        w = unet.get_submodule(path).weight
        r = min(rank, w.shape[0], w.shape[1])
        up = torch.nn.Parameter(0.05 * torch.randn(w.shape[0], r, *[1] * (w.ndim - 2), generator=g))
        down = torch.nn.Parameter(0.05 * torch.randn(r, *w.shape[1:], generator=g))
        tensors += [up.to("cpu").to(torch.float32), down.to("cpu").to(torch.float32)]
    return tensors


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a test that starts a server or an ``accelerate
    launch`` (``--main_process_port``): never a fixed number, which two pytest-xdist workers, or two runs of the
    suite on one machine, would both take."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupt_at_step(monkeypatch, step=3):
    """Make the trainers' (finetune's, distill's) draws of optimizer step ``step`` raise KeyboardInterrupt: a Ctrl-C
    in the middle of that step, after the training states of the steps before it were written."""
    from t2vlab import finetune

    draws = finetune.step_draws

    def interrupted(n, *args):
        if n == step:
            raise KeyboardInterrupt
        return draws(n, *args)

    monkeypatch.setattr(finetune, "step_draws", interrupted)
    return draws

