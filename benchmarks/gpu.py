"""Every GPU check in one call: fp16 parity, speed beside diffusers, the seed page's 64-frame run, LoRA fine-tuning.

    python benchmarks/gpu.py [--sections 1,2,3,4] [--json results.json] [--docs docs/benchmarks.md] [--mode MODE]
                             [--peak-tflops T] [--tiny]

Weights: random, full size (the published configs), built on the GPU: each model on meta, then
``to_empty(device)``, every weight and bias N(0, 0.02) from a seeded generator, GroupNorm/LayerNorm
weights 1 and biases 0. diffusers' modules are built on meta and given the very same tensors
(``load_state_dict(..., assign=True)``), so both sides run identical weights.

1. parity: fp16 output vs fp32 output (relative L2 error) of our UNet (256x256 -> 32x32 latents,
   16 frames, batch 2 as under guidance), VAE decode of one frame (fp16 math: force_upcast off),
   text encoder. Healthy: <= 1e-2.
2. speed, fp16, 256x256x16, four variants interleaved (5 runs each): t2vlab eager, t2vlab compiled
   (``pipe.compile``: UNet + VAE decoder), diffusers eager, diffusers with torch.compile on its UNet. One
   UNet call (batch 2) in ms and as a multiple of the FLOP floor (FLOPs counted by torch.utils.flop_counter,
   over the device's dense fp16 peak), end to end (text encode + 25 / 50 DPM-Solver++ steps + VAE decode),
   peak GPU memory, the first (compiling) call's time, and each compiled UNet against its eager one
   (relative L2, fp16: healthy <= 1e-2). ``--docs docs/benchmarks.md`` writes the table there.
3. the seed page's long video: 64 frames 256x256, fp16, model CPU offload + VAE slicing,
   25 DPM-Solver++ steps (the page uses 50 DDIM; the memory peak does not depend on the step count).
   diffusers' offload needs accelerate; without it diffusers runs without offload (said in the table).

4. LoRA fine-tuning (issue 21's aim: at most 12 GB): one training step of the UNet at 256x256, 16 frames,
   batch 1, as ``python -m t2vlab finetune --mixed-precision fp16 --gradient-checkpointing`` takes it
   (LoRA rank 16 on spatial and temporal attention, frozen weights in fp16, the LoRA in fp32, AdamW, fp16
   autocast with loss scaling): peak GPU memory and ms per step, with and without gradient checkpointing,
   and with the frozen weights in fp32; beside it diffusers' UNet with peft's LoRA on the same layers
   (its UNet3D has no gradient checkpointing), when peft is installed.

``--tiny``: the same sections on the tiny config, few frames and steps, on whatever device there is
(this is how tests/parity/test_gpu_script_parity.py runs the script on CPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import full_configs, measure, mib, print_table, randomize_  # noqa: E402
from t2vlab.atomic import write_text  # noqa: E402

PROMPT = "Spiderman is surfing"
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # relative L2 error vs fp32 that we consider healthy


def settings(tiny):
    if tiny:
        from t2vlab.weights import TINY_TEXT, TINY_UNET, TINY_VAE
        return dict(cfg={"unet": TINY_UNET, "vae": TINY_VAE, "text": TINY_TEXT}, size=64, frames=4, steps=(2, 3),
                    long_frames=8, long_steps=2, repeats=2, warmup=1, finetune_steps=2)
    return dict(cfg=full_configs(), size=256, frames=16, steps=(25, 50), long_frames=64, long_steps=25,
                repeats=5, warmup=3, finetune_steps=5)


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


# ---------------------------------------------------------------------------- FLOPs and the compiled variants
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}  # dense fp16


def peak_tflops(device_name, given=None):
    """The device's dense float16 tensor-core peak (vendor data sheets), or ``given``; None if unknown."""
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def count_flops(unet, fn):
    """FLOPs of ``fn()`` (a call of ``unet``) as torch.utils.flop_counter counts them: matmuls, convolutions
    (2 per multiply-add; elementwise work, norms and softmax are not counted, so the floor is a lower bound).
    Attention runs with the "math" backend while counting: the counter has no rule for the CPU's fused
    attention kernel and would leave attention out; written out, its two matmuls are counted on any device."""
    from torch.utils.flop_counter import FlopCounterMode

    unet.set_attention_backend("math")
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
    finally:
        unet.set_attention_backend("sdpa")
    return counter.get_total_flops()


def unet_flops_by_formula(unet, sample, context):
    """The same count from the layer shapes alone (hooks on every Linear, Conv and Attention module), so
    the counter's total can be checked: Linear 2*rows*in*out; Conv 2*out_elements*in/groups*kernel;
    attention 2*2*batch*heads*N*M*d (Q K^T, then P V)."""
    total = [0]

    def linear(m, args, out):
        total[0] += 2 * args[0].numel() // args[0].shape[-1] * m.in_features * m.out_features

    def conv(m, args, out):
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())

    def attention(m, args, kwargs, out):
        x = args[0]
        ctx = kwargs.get("context", args[1] if len(args) > 1 else None)
        m_tokens = x.shape[1] if ctx is None else ctx.shape[1]
        total[0] += 4 * x.shape[0] * m.heads * x.shape[1] * m_tokens * m.dim_head

    from t2vlab.attention import Attention

    handles = []
    for m in unet.modules():
        if isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            handles.append(m.register_forward_hook(conv))
        elif isinstance(m, Attention):
            handles.append(m.register_forward_hook(attention, with_kwargs=True))
    try:
        with torch.no_grad():
            unet(sample, torch.tensor(500, device=sample.device), context)
    finally:
        for h in handles:
            h.remove()
    return total[0]


class Variant:
    """One of the four contenders: a pipeline, eager or compiled, switchable in place (the compiled programs
    are kept while the eager forward runs, so switching back does not recompile)."""

    def __init__(self, name, pipe, compiled):
        self.name, self.pipe, self.compiled, self.programs = name, pipe, compiled, {}

    def modules(self):
        return [self.pipe.unet] + ([self.pipe.vae.decoder] if self.name.startswith("t2vlab") else [])

    def activate(self):
        for m in self.modules():
            if self.compiled:
                m._compiled_call_impl = self.programs[id(m)]
            else:
                m._compiled_call_impl = None


def compile_variants(pipes, mode, backend, s, dtype):
    """[Variant] for t2vlab and diffusers, eager and compiled; each compiled one warmed up on the benchmark's
    shapes (its first-call time recorded)."""
    variants, first_call = [], {}
    for name, pipe in pipes.items():
        variants.append(Variant(f"{name} eager", pipe, False))
        compiled = Variant(f"{name} compiled", pipe, True)
        t0 = time.perf_counter()
        if name == "t2vlab":
            pipe.compile(mode=mode, backend=backend)
            first_call[compiled.name] = pipe.warm_up(s["size"], s["size"], s["frames"])
        else:  # diffusers' documented recipe: torch.compile on its UNet (the VAE stays eager)
            options = {"mode": mode} if backend == "inductor" else {}
            pipe.unet.compile(backend=backend, fullgraph=True, **options)
            generate(pipe, s, 2)
            first_call[compiled.name] = {"unet+2 steps": time.perf_counter() - t0}
        compiled.programs = {id(m): m._compiled_call_impl for m in compiled.modules()}
        variants.append(compiled)
    for v in variants:  # eager by default
        if not v.compiled:
            v.activate()
    return variants, first_call


# ------------------------------------------------------------------------------------------ 2. speed
def section_speed(models, s, dtype, res, diffusers, transformers, tmp, mode="reduce-overhead", backend="inductor",
                  peak=None):
    """Four variants, interleaved (run r of every variant before run r+1 of any): one UNet call (batch 2),
    its multiple of the FLOP floor, and end to end at both step counts; compiled vs eager parity."""
    dev = models.device
    pipes = pipelines(models, diffusers, transformers, tmp)
    lat = s["size"] // 8
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(2, 4, s["frames"], lat, lat, device=dev, generator=g, dtype=dtype)
    ctx = torch.randn(2, 77, models.cfg["unet"].get("cross_attention_dim", 1024), device=dev, generator=g, dtype=dtype)
    t = torch.tensor(500, device=dev)
    flops = count_flops(models.ours["unet"], lambda: models.ours["unet"](x, t, ctx))
    tflops = peak_tflops(res["meta"]["device"], peak)
    floor_ms = flops / (tflops * 1e12) * 1000 if tflops else None
    variants, first_call = compile_variants(pipes, mode, backend, s, dtype)

    def unet_call(v):
        # diffusers' UNet as its pipeline calls it (return_dict=False, a tuple): called otherwise, its compiled
        # program would be traced again (dynamo guards on return_dict), a second compile inside the timings
        with torch.no_grad():
            if v.name.startswith("diffusers"):
                return v.pipe.unet(x, t, ctx, return_dict=False)[0]
            return v.pipe.unet(x, t, ctx)

    eager_out = {}
    for v in variants:  # parity of each compiled UNet with its own eager one (same weights)
        v.activate()
        out = unet_call(v).float().clone()
        key = v.name.split()[0]
        if not v.compiled:
            eager_out[key] = out
        else:
            first_call[v.name]["rel_err_vs_eager"] = rel_err(out, eager_out[key])
    timings = {(v.name, k): [] for v in variants for k in ["unet", *s["steps"]]}
    for r in range(s["repeats"]):
        for v in variants:
            v.activate()
            for _ in range(s["warmup"] if r == 0 else 0):
                unet_call(v)
            timings[(v.name, "unet")].append(measure(lambda v=v: unet_call(v), dev)[0])
    for steps in s["steps"]:
        for v in variants:
            v.activate()
            generate(v.pipe, s, 2)  # warm
        for _ in range(s["repeats"]):
            for v in variants:
                v.activate()
                timings[(v.name, steps)].append(measure(lambda v=v, n=steps: generate(v.pipe, s, n), dev)[0])
    peaks = {}
    for v in variants:
        v.activate()
        peaks[v.name] = measure(lambda v=v: generate(v.pipe, s, s["steps"][0]), dev)[1]
    for v in variants:  # leave every model eager (section 3 and later code expect plain modules)
        for m in v.modules():
            m._compiled_call_impl = None
    pipes["t2vlab"].compiled = None

    med = {k: statistics.median(v) for k, v in timings.items()}
    base = variants[0].name  # diffusers eager when diffusers is present
    rows, out = [], []
    a, b = s["steps"]
    for v in variants:
        ms = med[(v.name, "unet")] * 1000
        extra = first_call.get(v.name, {})
        rows.append([v.name, f"{ms:.1f}", f"{ms / floor_ms:.1f}x" if floor_ms else "-",
                     f"{med[(v.name, a)]:.2f}", f"{med[(v.name, b)]:.2f}",
                     f"{med[(v.name, a)] / med[(base, a)]:.2f}", f"{med[(v.name, b)] / med[(base, b)]:.2f}",
                     mib(peaks[v.name]), f"{extra['rel_err_vs_eager']:.1e}" if "rel_err_vs_eager" in extra else "-",
                     f"{sum(v for k, v in extra.items() if k != 'rel_err_vs_eager'):.0f}" if extra else "-"])
        out.append({"variant": v.name, "unet_ms": ms, "unet_ms_runs": [r * 1000 for r in timings[(v.name, "unet")]],
                    "floor_multiple": ms / floor_ms if floor_ms else None,
                    "end_to_end_s": {str(n): med[(v.name, n)] for n in s["steps"]},
                    "end_to_end_runs": {str(n): timings[(v.name, n)] for n in s["steps"]},
                    "peak_extra_bytes": peaks[v.name], "first_call": extra})
    head = (f"{s['size']}x{s['size']}, {s['frames']} frames, {dtype}, {res['meta']['device']}, compile mode {mode!r} "
            f"({backend}); UNet: {flops / 1e9:.4g} GFLOP per call (counted), floor at {tflops} TFLOP/s = "
            + (f"{floor_ms:.1f} ms" if floor_ms else "unknown (pass --peak-tflops)")
            + f"; medians of {s['repeats']} interleaved runs; ratios against {base}")
    headers = ["variant", "ms / UNet call", "x FLOP floor", f"s, {a} steps", f"s, {b} steps", f"ratio {a}",
               f"ratio {b}", f"extra peak MiB ({a} steps)", "rel. L2 vs eager UNet", "first call s"]
    print_table(headers, rows, f"2. speed: {head}")
    res["speed"] = {"flops_per_unet_call": flops, "peak_tflops": tflops, "floor_ms": floor_ms, "mode": mode,
                    "backend": backend, "variants": out, "table": {"title": head, "headers": headers, "rows": rows}}
    return pipes


def write_docs(res, path):
    """Replace the block between the GPU markers of ``path`` (docs/benchmarks.md) with this run's tables."""
    begin, end = "<!-- benchmarks/gpu.py: begin -->", "<!-- benchmarks/gpu.py: end -->"
    lines = [begin, "", f"`{' '.join(res['meta']['argv'])}` on {res['meta']['device']}, torch {res['meta']['torch']}"
             f", diffusers {res['meta'].get('diffusers', '-')}.", ""]
    for section in ("speed", "finetune"):  # the sections that print a table
        if section in res:
            table = res[section]["table"]
            lines += [table["title"] + ":", "", "| " + " | ".join(table["headers"]) + " |",
                      "|" + "|".join("---" for _ in table["headers"]) + "|"]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
            lines.append("")
    if "long_video" in res:
        frames = res["long_video"][0]["frames_shape"][1]
        lines += [f"Long video ({frames} frames, offload + VAE slicing): " + "; ".join(
            f"{r['impl']}: peak allocated {mib(r['peak_allocated_bytes']) if r['peak_allocated_bytes'] else 'n/a'} MiB,"
            f" {r['s']:.1f} s" for r in res["long_video"]) + ".", ""]
    lines.append(end)
    text = path.read_text(encoding="utf-8")
    if begin in text and end in text:
        text = text[:text.index(begin)] + "\n".join(lines) + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## GPU table (written by benchmarks/gpu.py)\n\n" + "\n".join(lines) + "\n"
    write_text(path, text)  # whole or not at all: a failure leaves the page as it was


# ------------------------------------------------------------------------------ 4. LoRA fine-tuning
def lora_step(unet, params, s, dtype, device, steps):
    """(ms per step, peak bytes) of ``steps`` training steps (after one warm-up): the trainer's loss on random
    latents and text, autocast in ``dtype`` with a loss scaler when it is fp16."""
    from t2vlab.finetune import diffusion_loss, step_draws
    from t2vlab.schedulers import DDPMScheduler
    from t2vlab.weights import SCHEDULER_CONFIG

    cuda = torch.device(device).type == "cuda"
    cfg = unet.config
    latent = (cfg.in_channels, s["frames"], s["size"] // 8, s["size"] // 8)
    data = {"latents": torch.randn(2, *latent, device=device), "empty": torch.randn(1, 77, cfg.cross_attention_dim,
            device=device), "text": torch.randn(2, 77, cfg.cross_attention_dim, device=device)}
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if cuda and dtype == torch.float16 else None
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):
        draws = {k: v.to(device) for k, v in step_draws(step, 0, 2, 1, latent, 1000, 0.0).items()}
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            loss = diffusion_loss(unet, scheduler, data, draws)
        (scaler.scale(loss) if scaler else loss).backward()
        scaler.step(optimizer) if scaler else optimizer.step()
        if scaler:
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step:  # the first step is the warm-up
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), torch.cuda.max_memory_allocated() if cuda else None


def section_finetune(models, s, res, steps):
    from t2vlab import UNet3DConditionModel
    from t2vlab.lora import add_lora, lora_targets

    dev = models.device
    cuda = torch.device(dev).type == "cuda"
    low = torch.float16 if cuda else torch.bfloat16  # CPU (--tiny): bf16 autocast, as the trainer's --mixed-precision
    state = {k: v.to("cpu") for k, v in models.ours["unet"].state_dict().items()}  # the benchmark's shared weights
    for m in models.ours.values():  # the GPU to this section alone: peaks are measured from the weights up
        m.to("cpu")
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    half = "fp16" if cuda else "bf16"
    variants = [(f"t2vlab, checkpointing, frozen weights {half}", low, True),
                (f"t2vlab, no checkpointing, frozen weights {half}", low, False),
                ("t2vlab, checkpointing, frozen weights fp32", torch.float32, True)]
    rows, out = [], []
    for name, weight_dtype, checkpointing in variants:
        with torch.device("meta"):
            unet = UNet3DConditionModel.from_config(s["cfg"]["unet"])
        unet.load_state_dict(state, assign=True)
        unet = unet.to(dev, weight_dtype).requires_grad_(False).eval()
        params = add_lora(unet, lora_targets(unet, "both"), 16, None, "bench")
        for p in params:
            p.data = p.data.float()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        ms, peak = lora_step(unet, params, s, low, dev, steps)
        rows.append([name, f"{ms:.0f}", mib(peak) if peak else "n/a (CPU)"])
        out.append({"variant": name, "ms_per_step": ms, "peak_allocated_bytes": peak})
        del unet, params
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    try:
        import diffusers
        import peft
    except ImportError:
        rows.append(["diffusers + peft", "not installed", "-"])
    else:
        with torch.device("meta"):
            ref = diffusers.UNet3DConditionModel.from_config(s["cfg"]["unet"])
        ref.load_state_dict(state, assign=True)
        ref = ref.to(dev, low).requires_grad_(False).eval()
        peft.inject_adapter_in_model(peft.LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v",
                                                                                            "to_out.0"]), ref)
        params = [p for n, p in ref.named_parameters() if "lora_" in n]
        for p in params:
            p.data, p.requires_grad = p.data.float(), True

        class Plain(torch.nn.Module):  # diffusers returns an output object; the loss wants the tensor
            def __init__(self, unet):
                super().__init__()
                self.unet, self.config = unet, unet.config

            def forward(self, x, t, text):
                return self.unet(x, t, text).sample

        ms, peak = lora_step(Plain(ref), params, s, low, dev, steps)
        rows.append([f"diffusers + peft, no checkpointing (none in its UNet3D), frozen weights {half}",
                     f"{ms:.0f}", mib(peak) if peak else "n/a (CPU)"])
        out.append({"variant": "diffusers + peft", "ms_per_step": ms, "peak_allocated_bytes": peak})
        del ref, params
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    for m in models.ours.values():
        m.to(dev)
    title = (f"4. LoRA fine-tuning step: {s['size']}x{s['size']}, {s['frames']} frames, batch 1, rank 16 on "
             f"spatial + temporal attention, {low} autocast, AdamW, {dev} (aim: at most 12 GB)")
    print_table(["variant", "ms per step", "peak allocated MiB"], rows, title)
    res["finetune"] = {"variants": out, "table": {"title": title, "headers": ["variant", "ms per step",
                                                                              "peak allocated MiB"], "rows": rows}}


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
    ap.add_argument("--sections", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--tiny", action="store_true", help="tiny config, few frames and steps, any device (a dry run: "
                                                         "traces with the eager backend)")
    ap.add_argument("--mode", default="reduce-overhead", help="torch.compile mode of both compiled variants")
    ap.add_argument("--backend", default=None, help="torch.compile backend (default inductor; eager with --tiny)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense fp16 peak, for the FLOP floor")
    ap.add_argument("--docs", type=Path, default=None, help="write the tables into this file (docs/benchmarks.md)")
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
                    backend = args.backend or ("eager" if args.tiny else "inductor")
                    pipes = section_speed(models, s, dtype, res, diffusers, transformers, tmp, args.mode, backend,
                                          args.peak_tflops)
                elif n == 3:
                    section_long(models, s, dtype, res, diffusers, transformers, tmp, pipes)
                elif n == 4:
                    section_finetune(models, s, res, s["finetune_steps"])
            elapsed[str(n)] = time.perf_counter() - t0
            print(f"\nsection {n} took {elapsed[str(n)]:.1f} s")
    elapsed["total"] = time.perf_counter() - t_start
    print(f"\ntotal {elapsed['total']:.1f} s")
    if args.json:
        write_text(args.json, json.dumps(res, indent=2, default=str) + "\n")
        print(f"results written to {os.fspath(args.json)}")
    if args.docs:
        write_docs(res, args.docs)
        print(f"tables written into {os.fspath(args.docs)}")


if __name__ == "__main__":
    main()
