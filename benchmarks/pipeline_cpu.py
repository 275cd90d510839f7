"""The whole pipeline, ours beside diffusers' TextToVideoSDPipeline, on CPU: generation and loading.

(a) the tiny checkpoint (make_tiny_checkpoint; both load the same folder): 8 frames of 64x64,
    25 DDIM steps, guidance 9, same prompt and seed; runs alternate (ref, ours, ref, ours, ...),
    medians reported. Time and extra peak resident memory per generation.
(b) full width (skip with --skip-full): random full-size weights (the published configs; every
    weight N(0, 0.02) from a seeded generator, norms' weights 1 and biases 0) written once by
    diffusers' save_pretrained to a temporary folder; then
    - load time of that folder, each library in a fresh subprocess, twice each, interleaved;
    - generation, 8 frames of 64x64, 10 DDIM steps, float32: one pipeline in memory at a time.

    python benchmarks/pipeline_cpu.py [--skip-full] [--repeats 5] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import full_configs, measure, mib, print_table, randomize_  # noqa: E402

PROMPT = "an astronaut riding a horse on the moon"
AIMS = "aims: generation time <= 0.9x diffusers', loading time <= 0.5x, extra peak memory <= 1.0x"


def load(which, folder):
    if which == "ours":
        from t2vlab import TextToVideoPipeline
        pipe = TextToVideoPipeline.from_pretrained(folder)
    else:
        import diffusers
        pipe = diffusers.TextToVideoSDPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, frames, size, steps):
    return pipe(PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=steps, guidance_scale=9.0,
                generator=torch.Generator().manual_seed(0), output_type="np").frames


def measured_run(pipe, store, **kw):
    """Time and extra peak memory of one generation; the frames go to store["frames"]."""
    def fn():
        store["frames"] = generate(pipe, **kw)
    return measure(fn)


def ratio_rows(rows, t_idx, m_idx):
    """Append 'time ratio' and 'memory ratio' (ours / diffusers) to [diffusers, ours] rows."""
    ref, ours = rows
    ref += ["1.00", "1.00"]
    memory = float(ours[m_idx]) / float(ref[m_idx]) if float(ref[m_idx]) >= 1 else None
    # below 1 MiB the high-water mark is allocator noise: no meaningful ratio
    ours += [f"{ours[t_idx] / ref[t_idx]:.2f}", "n/a" if memory is None else f"{memory:.2f}"]
    return rows


def print_generation(results, frames, caption):
    """The generation table: median time and peak memory per implementation, ratios, frame agreement."""
    diff = abs(frames["ours"] - frames["diffusers"]).max()
    rows = [[label, statistics.median(t for t, _ in results[k]), mib(statistics.median(m for _, m in results[k]))]
            for label, k in (("diffusers 0.42.1", "diffusers"), ("t2vlab", "ours"))]
    print_table(["implementation", "s / video (median)", "extra peak MiB (median)", "time ratio", "memory ratio"],
                ratio_rows(rows, 1, 2), f"{caption} (max |frame difference| {diff:.1e}); {AIMS}")


# ---------------------------------------------------------------------------------------------- (a)
def bench_tiny(tmp, repeats):
    from t2vlab import make_tiny_checkpoint

    folder = make_tiny_checkpoint(tmp / "tiny", variants=(None,))
    pipes = {"diffusers": load("diffusers", folder), "ours": load("ours", folder)}
    kw = dict(frames=8, size=64, steps=25)
    results = {k: [] for k in pipes}
    frames = {}
    for pipe in pipes.values():  # warmup
        generate(pipe, frames=2, size=64, steps=2)
    for _ in range(repeats):
        for name, pipe in pipes.items():
            store = {}
            results[name].append(measured_run(pipe, store, **kw))
            frames[name] = store["frames"]
    print_generation(results, frames, f"(a) tiny checkpoint: 8 frames 64x64, 25 DDIM steps, guidance 9, {repeats} "
                                      "runs each, alternated")


# ---------------------------------------------------------------------------------------------- (b)
def write_full_checkpoint(folder, seed=0):
    """Random full-size weights in the published layout, written by diffusers' own save_pretrained."""
    import diffusers
    import transformers

    from t2vlab import Tokenizer
    from t2vlab.weights import SCHEDULER_CONFIG

    cfg = full_configs()
    text_cfg = transformers.CLIPTextConfig(**{k: v for k, v in cfg["text"].items() if k != "use_attention_mask"})
    with torch.device("meta"):
        unet = diffusers.UNet3DConditionModel.from_config(cfg["unet"])
        vae = diffusers.AutoencoderKL.from_config(cfg["vae"])
        text = transformers.CLIPTextModel(text_cfg)
    models = [randomize_(m.to_empty(device="cpu"), seed + i).eval() for i, m in enumerate((unet, vae, text))]
    Tokenizer.default().save_pretrained(folder / "_tok")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / "_tok"))
    pipe = diffusers.TextToVideoSDPipeline(unet=models[0], vae=models[1], text_encoder=models[2], tokenizer=tokenizer,
                                           scheduler=diffusers.DDIMScheduler.from_config(SCHEDULER_CONFIG))
    pipe.save_pretrained(folder)
    shutil.rmtree(folder / "_tok")
    n = sum(p.numel() for m in models for p in m.parameters())
    return n


def load_in_subprocess(which, folder):
    out = subprocess.run([sys.executable, __file__, "--load-only", which, "--folder", str(folder)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_full(tmp, repeats):
    folder = tmp / "full"
    t0 = time.perf_counter()
    n = write_full_checkpoint(folder)
    gc.collect()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"\nfull-size random checkpoint: {n / 1e9:.2f} B parameters, {size / 2**30:.2f} GiB on disk, "
          f"written in {time.perf_counter() - t0:.0f} s")

    loads = {"diffusers": [], "ours": []}
    for _ in range(2):
        for which in loads:
            loads[which].append(load_in_subprocess(which, folder))
    med = lambda k, key: statistics.median(r[key] for r in loads[k])  # noqa: E731
    # what a user waits for is import + from_pretrained: `import t2vlab` is lazy, so our from_pretrained
    # pays for importing transformers, which diffusers pays at import time
    rows = [[label, med(k, "import_s"), med(k, "load_s"), med(k, "import_s") + med(k, "load_s"), mib(med(k, "rss"))]
            for label, k in (("diffusers 0.42.1", "diffusers"), ("t2vlab", "ours"))]
    rows[0] += ["1.00", "1.00"]
    rows[1] += [f"{rows[1][2] / rows[0][2]:.2f}", f"{rows[1][3] / rows[0][3]:.2f}"]
    print_table(["implementation", "import s", "from_pretrained s (median of 2)", "import + load s",
                 "RSS after load MiB",
                 "load ratio", "import + load ratio"],
                rows, f"(b) loading the full-size float32 checkpoint in a fresh process, 2 runs each, interleaved; "
                      f"{AIMS}")

    kw = dict(frames=8, size=64, steps=10)
    results, frames = {}, {}
    for which in ("diffusers", "ours"):
        pipe = load(which, folder)
        generate(pipe, frames=2, size=64, steps=1)  # warmup
        store = {}
        results[which] = [measured_run(pipe, store, **kw) for _ in range(repeats)]
        frames[which] = store["frames"]
        del pipe, store
        gc.collect()
    print_generation(results, frames, f"(b) full width, float32: 8 frames 64x64, 10 DDIM steps, guidance 9, "
                                      f"{repeats} runs each")


def load_only(which, folder):
    t0 = time.perf_counter()
    if which == "ours":
        import t2vlab.pipeline  # noqa: F401
    else:
        import diffusers  # noqa: F401
        diffusers.TextToVideoSDPipeline  # noqa: B018  (diffusers imports lazily)
    t1 = time.perf_counter()
    pipe = load(which, folder)
    t2 = time.perf_counter()
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    del pipe
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rss": rss}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-full", action="store_true", help="only (a), the tiny checkpoint")
    ap.add_argument("--repeats", type=int, default=5, help="generations per implementation for (a)")
    ap.add_argument("--full-repeats", type=int, default=2, help="generations per implementation for (b)")
    ap.add_argument("--tmp", type=Path, default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--load-only", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_only:
        return load_only(args.load_only, args.folder)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    tmp = Path(tempfile.mkdtemp(prefix="t2v-bench-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        bench_tiny(tmp, args.repeats)
        print(f"\n(a) took {time.perf_counter() - t0:.0f} s")
        if not args.skip_full:
            t0 = time.perf_counter()
            bench_full(tmp, args.full_repeats)
            print(f"\n(b) took {time.perf_counter() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
