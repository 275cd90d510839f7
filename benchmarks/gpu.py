"""Every GPU check in one call: fp16 parity, speed beside diffusers, and the seed page's 64-frame run.

    python benchmarks/gpu.py [--sections 1,2,3] [--json results.json] [--tiny]

Weights: random, full size (the published configs), built on the GPU: each model on meta, then
``to_empty(device)``, every weight and bias N(0, 0.02) from a seeded generator, GroupNorm/LayerNorm
weights 1 and biases 0. diffusers' modules are built on meta and given the very same tensors
(``load_state_dict(..., assign=True)``), so both sides run identical weights.

1. parity: fp16 output vs fp32 output (relative L2 error) of our UNet (256x256 -> 32x32 latents,
   16 frames, batch 2 as under guidance), VAE decode of one frame (fp16 math: force_upcast off),
   text encoder. Healthy: <= 1e-2.
2. speed, fp16, 256x256x16: one UNet call (batch 2), and end to end (text encode + 25 / 50
   DPM-Solver++ steps + VAE decode), ours beside diffusers, with peak GPU memory.
3. the seed page's long video: 64 frames 256x256, fp16, model CPU offload + VAE slicing,
   25 DPM-Solver++ steps (the page uses 50 DDIM; the memory peak does not depend on the step count).
   diffusers' offload needs accelerate; without it diffusers runs without offload (said in the table).

``--tiny``: the same sections on the tiny config, few frames and steps, on whatever device there is
(this is how tests/parity/test_gpu_script_parity.py runs the script on CPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import cuda_time, full_configs, measure, mib, print_table, randomize_, time_call  # noqa: E402

PROMPT = "Spiderman is surfing"
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # relative L2 error vs fp32 that we consider healthy


def settings(tiny):
    if tiny:
        from t2vlab.weights import TINY_TEXT, TINY_UNET, TINY_VAE
        return dict(cfg={"unet": TINY_UNET, "vae": TINY_VAE, "text": TINY_TEXT}, size=64, frames=4, steps=(2, 3),
                    long_frames=8, long_steps=2, repeats=2, warmup=1)
    return dict(cfg=full_configs(), size=256, frames=16, steps=(25, 50), long_frames=64, long_steps=25,
                repeats=10, warmup=3)


def try_diffusers():
    try:
        import diffusers
        import transformers
        return diffusers, transformers
    except ImportError as e:
        print(f"\nnote: diffusers/transformers not importable ({e}); the diffusers columns are skipped")
        return None, None


class Models:
    """Our three models (fp32 until ``half()``), and on demand diffusers' modules sharing their tensors."""

    def __init__(self, cfg, device, seed=0):
        from t2vlab import AutoencoderKL, CLIPTextEncoder, UNet3DConditionModel

        self.cfg, self.device = cfg, device
        with torch.device("meta"):
            built = {"unet": UNet3DConditionModel.from_config(cfg["unet"]),
                     "vae": AutoencoderKL.from_config(cfg["vae"]), "text": CLIPTextEncoder.from_config(cfg["text"])}
        self.ours = {}
        for i, (k, m) in enumerate(built.items()):
            m = randomize_(m.to_empty(device=device), seed + i)
            self.ours[k] = m.eval()
        self.ref = None

    def half(self, dtype):
        for m in self.ours.values():
            m.to(dtype)
        self.ref = None

    def diffusers_modules(self, diffusers, transformers):
        if self.ref is None:
            text_cfg = {k: v for k, v in self.cfg["text"].items() if k != "use_attention_mask"}
            with torch.device("meta"):
                ref = {"unet": diffusers.UNet3DConditionModel.from_config(self.cfg["unet"]),
                       "vae": diffusers.AutoencoderKL.from_config(self.cfg["vae"]),
                       "text": transformers.CLIPTextModel(transformers.CLIPTextConfig(
                           **{"vocab_size": 49408, "max_position_embeddings": 77, **text_cfg}))}
            for k, m in ref.items():
                state = self.ours[k].state_dict()
                if k == "text" and not any(n.startswith("text_model.") for n in m.state_dict()):
                    state = {n.removeprefix("text_model."): v for n, v in state.items()}
                m.load_state_dict(state, assign=True, strict=k != "text")
                m.eval()
            for mod in ref["text"].modules():  # the one non-persistent buffer, still on meta
                if "position_ids" in mod._buffers:
                    n = mod.position_ids.shape[-1]
                    mod.position_ids = torch.arange(n, device=self.device)[None]
            self.ref = ref
        return self.ref


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------------------ 1. parity
def section_parity(models, s, dtype, res):
    from t2vlab import Tokenizer

    dev = models.device
    g = torch.Generator(device=dev).manual_seed(0)
    lat = s["size"] // 8
    x = torch.randn(2, 4, s["frames"], lat, lat, device=dev, generator=g)
    d = models.cfg["text"].get("hidden_size", 1024)
    ctx = torch.randn(2, 77, models.cfg["unet"].get("cross_attention_dim", 1024), device=dev, generator=g)
    z = torch.randn(1, 4, lat, lat, device=dev, generator=g)
    ids = Tokenizer.default()([PROMPT]).input_ids.to(dev)
    t = torch.tensor([500, 500], device=dev)
    vae = models.ours["vae"]
    vae.force_upcast = False  # measure fp16 math itself, not the float32 fallback
    calls = {"unet": lambda u, dt: u(x.to(dt), t, ctx.to(dt)),
             "vae decode (1 frame)": lambda v, dt: v.decode(z.to(dt)),
             "text encoder": lambda e, dt: e(ids)}
    which = {"unet": "unet", "vae decode (1 frame)": "vae", "text encoder": "text"}
    with torch.no_grad():
        ref = {k: f(models.ours[which[k]], torch.float32).float() for k, f in calls.items()}
        models.half(dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            low = {k: f(models.ours[which[k]], dtype).float() for k, f in calls.items()}
    vae.force_upcast = False  # the default: float16, with the float32 fallback only for non-finite output
    upcast = any("float32" in str(w.message) for w in caught)
    rows, out = [], []
    for k in calls:
        e = rel_err(low[k], ref[k])
        finite = bool(torch.isfinite(low[k]).all())
        ok = finite and e <= TOLERANCE[dtype]
        rows.append([k, tuple(ref[k].shape), f"{e:.2e}", f"{ref[k].float().std().item():.3g}", finite,
                     "pass" if ok else "FAIL"])
        out.append({"model": k, "shape": list(ref[k].shape), "rel_err": e, "finite": finite, "pass": ok})
    print_table(["model", "output shape", f"rel. L2 error {dtype} vs fp32", "fp32 output std", "finite", "result"],
                rows, f"1. {dtype} vs float32 on {dev}: relative L2 error, healthy <= {TOLERANCE[dtype]:g}"
                      + (" (the VAE fell back to float32: overflow)" if upcast else ""))
    res["parity"] = {"tolerance": TOLERANCE[dtype], "dtype": str(dtype), "d_model": d, "rows": out}


# ------------------------------------------------------------------------------------------ 2. speed
def pipelines(models, diffusers, transformers, tmp):
    from t2vlab import DPMSolverMultistepScheduler, TextToVideoPipeline, Tokenizer
    from t2vlab.weights import SCHEDULER_CONFIG

    o = models.ours
    ours = TextToVideoPipeline(o["unet"], o["vae"], o["text"], Tokenizer.default(),
                               DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG))
    ours.set_progress_bar_config(disable=True)
    pipes = {"t2vlab": ours}
    if diffusers is not None:
        r = models.diffusers_modules(diffusers, transformers)
        Tokenizer.default().save_pretrained(tmp / "tok")
        ref = diffusers.TextToVideoSDPipeline(
            unet=r["unet"], vae=r["vae"], text_encoder=r["text"],
            tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tmp / "tok")),
            scheduler=diffusers.DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG))
        ref.set_progress_bar_config(disable=True)
        pipes = {"diffusers": ref, **pipes}
    return pipes


def generate(pipe, s, steps, frames=None):
    dev = pipe.device if hasattr(pipe, "offload_device") else pipe._execution_device
    return pipe(PROMPT, num_frames=frames or s["frames"], height=s["size"], width=s["size"], num_inference_steps=steps,
                guidance_scale=9.0, generator=torch.Generator(device=dev).manual_seed(0), output_type="np").frames


def add_ratios(rows, cols):
    """rows: [name, v1, v2, ...] with diffusers first when present: append ours/diffusers ratios of ``cols``."""
    if rows[0][0] != "diffusers":
        return [r + ["-"] * len(cols) for r in rows]
    return [r + [f"{r[c] / rows[0][c]:.2f}" if rows[0][c] else "-" for c in cols] for r in rows]


def section_speed(models, s, dtype, res, diffusers, transformers, tmp):
    dev = models.device
    cuda = torch.device(dev).type == "cuda"
    pipes = pipelines(models, diffusers, transformers, tmp)
    lat = s["size"] // 8
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(2, 4, s["frames"], lat, lat, device=dev, generator=g, dtype=dtype)
    ctx = torch.randn(2, 77, models.cfg["unet"].get("cross_attention_dim", 1024), device=dev, generator=g, dtype=dtype)
    t = torch.tensor([500, 500], device=dev)
    step_rows, e2e_rows, out = [], [], {"unet_step": [], "end_to_end": []}
    for name, pipe in pipes.items():
        unet = pipe.unet

        def call(unet=unet):
            with torch.no_grad():
                return unet(x, t, ctx)
        sec = (cuda_time if cuda else time_call)(call, repeats=s["repeats"], warmup=s["warmup"])
        _, mem = measure(call, dev)
        step_rows.append([name, sec * 1000, mib(mem)])
        out["unet_step"].append({"impl": name, "ms": sec * 1000, "peak_extra_bytes": mem})
    for name, pipe in pipes.items():
        generate(pipe, s, 2)  # warmup
        row = [name]
        for steps in s["steps"]:
            sec, mem = measure(lambda pipe=pipe, steps=steps: generate(pipe, s, steps), dev)
            row += [sec, mib(mem)]
            out["end_to_end"].append({"impl": name, "steps": steps, "s": sec, "peak_extra_bytes": mem})
        e2e_rows.append(row)
    head = f"{s['size']}x{s['size']}, {s['frames']} frames, {dtype}, {dev}"
    print_table(["implementation", "ms / UNet call", "extra peak MiB", "time ratio"],
                add_ratios(step_rows, [1]), f"2. one denoising step (UNet, batch 2), {head}")
    a, b = s["steps"]
    print_table(["implementation", f"s, {a} steps", "extra peak MiB", f"s, {b} steps", "extra peak MiB",
                 f"time ratio {a}", f"time ratio {b}"],
                add_ratios(e2e_rows, [1, 3]),
                f"2. end to end, DPM-Solver++ (text encode + steps + VAE decode), {head}; both decode in fp16")
    res["speed"] = out
    return pipes


# ------------------------------------------------------------------------------------ 3. long video
def section_long(models, s, dtype, res, diffusers, transformers, tmp, pipes=None):
    dev = models.device
    cuda = torch.device(dev).type == "cuda"
    pipes = pipes or pipelines(models, diffusers, transformers, tmp)
    for pipe in pipes.values():  # everything off the GPU first: the peak is measured from zero
        pipe.to("cpu")
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    rows, out = [], []
    for name, pipe in pipes.items():
        how = "offload + VAE slicing"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pipe.enable_model_cpu_offload(device=dev) if name == "t2vlab" else pipe.enable_model_cpu_offload()
            except (ImportError, RuntimeError, ValueError) as e:  # diffusers without accelerate
                how = f"no offload ({type(e).__name__}: accelerate missing?), VAE slicing"
                pipe.to(dev)
        pipe.enable_vae_slicing() if name == "t2vlab" else pipe.vae.enable_slicing()  # diffusers 0.42: on the VAE
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        frames = generate(pipe, s, s["long_steps"], s["long_frames"])
        sec = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if cuda else None
        reserved = torch.cuda.max_memory_reserved() if cuda else None
        rows.append([name, how, sec, mib(peak) if cuda else "n/a (CPU)", mib(reserved) if cuda else "n/a"])
        out.append({"impl": name, "mode": how, "s": sec, "peak_allocated_bytes": peak, "peak_reserved_bytes": reserved,
                    "frames_shape": list(frames.shape)})
        pipe.to("cpu") if name == "t2vlab" else None
        del frames
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    print_table(["implementation", "mode", "s", "peak allocated MiB", "peak reserved MiB"],
                rows, f"3. seed page's long video: {s['long_frames']} frames {s['size']}x{s['size']}, {dtype}, "
                      f"{s['long_steps']} DPM-Solver++ steps (the page: 50 DDIM; it claims 7 GB), {dev}")
    res["long_video"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="1,2,3", help="comma-separated subset of 1,2,3")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--tiny", action="store_true", help="tiny config, few frames and steps, any device")
    args = ap.parse_args()
    sections = {int(x) for x in args.sections.split(",")}
    t_start = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu" and not args.tiny:
        sys.exit("no CUDA GPU here: run with --tiny (tiny config on CPU), or on a GPU machine")
    # float16 on the GPU; on CPU (--tiny only) float16 is emulated and very slow: parity in bfloat16,
    # speed and long video in float32
    dtype = torch.float16 if dev == "cuda" else torch.float32
    low = torch.float16 if dev == "cuda" else torch.bfloat16
    s = settings(args.tiny)
    res = {"meta": {"argv": sys.argv, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                    "torch": torch.__version__, "tiny": args.tiny, "dtype": str(dtype), "size": s["size"],
                    "frames": s["frames"], "init": "N(0, 0.02), norms' weights 1 and biases 0, seed 0"}}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"torch {torch.__version__}, device {res['meta']['device']}, {torch.get_num_threads()} CPU threads")
    diffusers, transformers = try_diffusers() if sections & {2, 3} else (None, None)
    if diffusers is not None:
        res["meta"]["diffusers"] = diffusers.__version__
    elapsed = res["meta"]["elapsed_s"] = {}

    t0 = time.perf_counter()
    models = Models(s["cfg"], dev)
    elapsed["build"] = time.perf_counter() - t0
    print(f"\nbuilt random weights on {dev} in {elapsed['build']:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipes = None
        for n in sorted(sections):
            t0 = time.perf_counter()
            if n == 1:
                section_parity(models, s, low, res)
            else:
                if next(iter(models.ours["unet"].parameters())).dtype != dtype:
                    models.half(dtype)
                if n == 2:
                    pipes = section_speed(models, s, dtype, res, diffusers, transformers, tmp)
                elif n == 3:
                    section_long(models, s, dtype, res, diffusers, transformers, tmp, pipes)
            elapsed[str(n)] = time.perf_counter() - t0
            print(f"\nsection {n} took {elapsed[str(n)]:.1f} s")
    elapsed["total"] = time.perf_counter() - t_start
    print(f"\ntotal {elapsed['total']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"results written to {os.fspath(args.json)}")


if __name__ == "__main__":
    main()
