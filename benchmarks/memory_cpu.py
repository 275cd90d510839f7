"""The two memory tools on this CPU: layerwise casting's parameter bytes, group offloading's resident weights.

(a) Parameter memory of the published UNet (1.41 B parameters; shapes only, on the meta device, so the
    bytes are arithmetic): float32, float16, and float8 storage with the default skips (norms and the time
    embedding stay float16) and without any skip; diffusers' UNet3DConditionModel with its own
    ``enable_layerwise_casting`` beside ours when diffusers is installed.
(b) One call of the shipped toy UNet (trained weights; batch 2, 8 frames, 8x8 latents, float32): the
    weights resident during the call (``t2vlab.group_offload.storage_bytes`` of the UNet's tensors, read at
    the start and end of every layer; the peak), and the time per call, for: no offloading; group offloading
    to disk, block level and leaf level; float8 layerwise casting (compute float32); both. The settings run
    interleaved (one call of each per round, ``--repeats`` rounds), medians and ratios against none; diffusers'
    same settings on its UNet beside them (time only: its disk placeholders are full-size ``empty_like``
    tensors, so counting storages would not measure it).
(c) A toy video (8 frames 64x64, 25 DPM-Solver++ steps, guidance 9) with the UNet so set: the largest and mean
    frame difference against the plain video (frames in [0, 1]); with ``--evaluate``, the toy evaluator over its
    48 captions as well.

    python benchmarks/memory_cpu.py [--repeats 5] [--threads 1] [--evaluate]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import print_table  # noqa: E402

F8 = torch.float8_e4m3fn
PROMPT = "a red circle moving left"


def mb(n) -> str:
    return f"{n / 1e6:.2f}"


# ----------------------------------------------------------------------------------- (a) parameter bytes
def parameter_table():
    from t2vlab import configs
    from t2vlab.checkpoint import config_from_dict
    from t2vlab.layerwise_casting import parameter_bytes
    from t2vlab.unet.model import UNet3DConditionModel, UNetConfig

    def ours(dtype, storage=None, skips=None):
        with torch.device("meta"):
            unet = UNet3DConditionModel(config_from_dict(UNetConfig, dict(configs.UNET))).to(dtype)
        if storage is not None:
            unet.enable_layerwise_casting(storage, dtype, skip_modules_pattern=skips)
        return parameter_bytes(unet)

    def theirs(dtype, storage=None, skips=None):
        try:
            import diffusers
        except ImportError:
            return None
        cfg = {k: v for k, v in configs.UNET.items() if not k.startswith("_")}
        with torch.device("meta"):
            unet = diffusers.UNet3DConditionModel(**cfg).to(dtype)
        if storage is not None:
            if skips == ():
                from diffusers.hooks import apply_layerwise_casting
                apply_layerwise_casting(unet, storage, dtype, skip_modules_pattern=())
            else:
                unet.enable_layerwise_casting(storage, dtype)
        return parameter_bytes(unet)

    rows_spec = [("float32", torch.float32, None, None), ("float16", torch.float16, None, None),
                 ("float8_e4m3fn storage, default skips (compute float16)", torch.float16, F8, None),
                 ("float8_e4m3fn storage, nothing skipped (compute float16)", torch.float16, F8, ())]
    fp32, fp16 = ours(torch.float32), ours(torch.float16)
    rows = []
    for label, dtype, storage, skips in rows_spec:
        b, d = ours(dtype, storage, skips), theirs(dtype, storage, skips)
        rows.append([label, f"{b / 2**30:.3f}", "-" if d is None else f"{d / 2**30:.3f}", f"{b / fp16:.3f}",
                     f"{b / fp32:.3f}"])
    print_table(["UNet weights", "GiB (t2vlab)", "GiB (diffusers 0.42.1)", "ratio to float16", "ratio to float32"],
                rows, "(a) Parameter memory of the published UNet (meta device, bytes by arithmetic)")


# ------------------------------------------------------------------------------ (b) resident weights, time
def toy_unets(settings, folder, diffusers_too, disk):
    """One UNet per library and setting, each set once (its own folder for files: diffusers reuses a file of
    the same group name that it finds, which two models in one folder would share)."""
    from t2vlab.unet.model import UNet3DConditionModel

    models = {}
    for lib in ("t2vlab", "diffusers") if diffusers_too else ("t2vlab",):
        for i, (name, setup) in enumerate(settings.items()):
            if lib == "t2vlab":
                unet = UNet3DConditionModel.from_pretrained(folder, subfolder="unet")
            else:
                import diffusers

                unet = diffusers.UNet3DConditionModel.from_pretrained(folder, subfolder="unet",
                                                                      torch_dtype=torch.float32)
            path = Path(disk) / f"{lib}-{i}"
            path.mkdir()
            setup(unet.eval(), str(path))
            models[lib, name] = unet
    return models


def peak_resident(unet, x):
    """(peak resident bytes over the layers' starts and ends, output) of one call."""
    from t2vlab.group_offload import storage_bytes

    peak, tensors = [0], [*unet.parameters(), *unet.buffers()]

    def measure(*_):
        peak[0] = max(peak[0], storage_bytes(tensors))

    layers = [m for m in unet.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(measure) for m in layers] + [m.register_forward_hook(measure) for m in layers]
    with torch.no_grad():
        out = call(unet, x)
    for h in hooks:
        h.remove()
    return peak[0], out


def call(unet, x):
    out = unet(*x)
    return out.sample if hasattr(out, "sample") else out


def offload_table(repeats, diffusers_too, disk):
    from t2vlab.group_offload import resident_bytes
    from t2vlab.toy import toy_checkpoint

    folder = toy_checkpoint()
    def block(u, path):
        u.enable_group_offload("cpu", offload_type="block_level", num_blocks_per_group=1, offload_to_disk_path=path)

    def leaf(u, path):
        u.enable_group_offload("cpu", offload_type="leaf_level", offload_to_disk_path=path)

    def cast(u, path):
        u.enable_layerwise_casting(F8, torch.float32)

    settings = {"none": lambda u, path: None, "group offload to disk, block level": block,
                "group offload to disk, leaf level": leaf, "float8 layerwise casting": cast,
                "float8 casting + block level to disk": lambda u, path: (cast(u, path), block(u, path))}
    models = toy_unets(settings, folder, diffusers_too, disk)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 4, 8, 8, 8, generator=g), torch.tensor([500, 500]), torch.randn(2, 77, 32, generator=g))
    total = resident_bytes(models["t2vlab", "none"])
    with torch.no_grad():
        plain = {lib: call(models[lib, "none"], x) for lib in {lib for lib, _ in models}}
    peaks, diffs = {}, {}
    for key, unet in models.items():
        if key[0] == "t2vlab":
            peaks[key], out = peak_resident(unet, x)
        else:
            with torch.no_grad():
                out = call(unet, x)
        diffs[key] = ((out - plain[key[0]]).abs().max() / plain[key[0]].abs().max()).item()
    times = {key: [] for key in models}
    with torch.no_grad():
        for key in models:  # warm-up
            call(models[key], x)
        for _ in range(repeats):
            for key, unet in models.items():
                t0 = time.perf_counter()
                call(unet, x)
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for lib, name in models:
        peak = peaks.get((lib, name))
        rows.append([lib, name, "-" if peak is None else mb(peak), "-" if peak is None else f"{peak / total:.1%}",
                     f"{med[lib, name] * 1e3:.1f}", f"{med[lib, name] / med[lib, 'none']:.2f}",
                     f"{diffs[lib, name]:.2e}"])
    print_table(["library", "setting", "peak resident MB", "share of weights", "ms / call (median)",
                 "time vs none", "output change (relative)"], rows,
                f"(b) Toy UNet, one call: resident weights and time ({mb(total)} MB of float32 weights, "
                f"{repeats} interleaved rounds)")
    for (lib, _), unet in models.items():
        if lib == "t2vlab" and getattr(unet, "_group_offload", None) is not None:
            unet.disable_group_offload()


# ------------------------------------------------------------------------------------------ (c) frames
def frames_table(evaluate_too, disk):
    from t2vlab import TextToVideoPipeline
    from t2vlab.schedulers import from_name

    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def video():
        return torch.as_tensor(pipe(PROMPT, num_frames=8, num_inference_steps=25, guidance_scale=9.0,
                                    generator=torch.Generator().manual_seed(0), output_type="np").frames)

    settings = [("plain", lambda: None, lambda: None),
                ("float8_e4m3fn storage (compute float32)",
                 lambda: pipe.unet.enable_layerwise_casting(F8, torch.float32), pipe.unet.disable_layerwise_casting),
                ("bfloat16 storage (compute float32)",
                 lambda: pipe.unet.enable_layerwise_casting(torch.bfloat16, torch.float32),
                 pipe.unet.disable_layerwise_casting),
                ("group offload to disk, leaf level",
                 lambda: pipe.unet.enable_group_offload("cpu", offload_type="leaf_level", offload_to_disk_path=disk),
                 pipe.unet.disable_group_offload)]
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    rows, plain = [], None
    for label, on, off in settings:
        on()
        frames = video()
        summary = None
        if evaluate_too:
            from t2vlab.toy.evaluate import evaluate

            summary = evaluate(pipe)[1]["all"]
        off()
        pipe.unet.load_state_dict(state)  # the values casting rounded, back
        plain = frames if plain is None else plain
        diff = (frames - plain).abs()
        rows.append([label, f"{diff.max():.4f}", f"{diff.mean():.5f}"]
                    + ([f"{summary['colour']:.1%}", f"{summary['direction']:.1%}"] if summary else []))
    print_table(["UNet", "max abs. frame diff vs plain", "mean abs. frame diff"]
                + (["evaluator colour", "evaluator direction"] if evaluate_too else []), rows,
                "(c) A toy video: frames against the plain ones")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--evaluate", action="store_true", help="also score the toy evaluator's 48 captions per setting")
    ap.add_argument("--no-diffusers", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import diffusers  # noqa: F401
        diffusers_too = not args.no_diffusers
    except ImportError:
        diffusers_too = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    parameter_table()
    with tempfile.TemporaryDirectory() as disk:
        offload_table(args.repeats, diffusers_too, disk)
        frames_table(args.evaluate, disk)


if __name__ == "__main__":
    main()
