"""One video from the shipped toy checkpoint on this CPU, ours beside diffusers' TextToVideoSDPipeline.

Both load the same folder (t2vlab.toy_checkpoint(), the published layout). One video of 8 frames of
64x64, 25 DPM-Solver++ steps, guidance 9 (the setting the evaluator scores), same prompt and seed;
runs alternate (diffusers, ours, diffusers, ...), medians reported, with the time ratio. The issue's
bar is an absolute one (under 5 s per video on the development machine), so the table gives seconds
too; compare machines only by the ratio.

    python benchmarks/toy_cpu.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import measure, mib, print_table  # noqa: E402

PROMPT = "a red circle moving left"


def load(which, folder):
    if which == "ours":
        from t2vlab import TextToVideoPipeline
        from t2vlab.schedulers import from_name

        pipe = TextToVideoPipeline.from_pretrained(folder)
        pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    else:
        import diffusers

        pipe = diffusers.TextToVideoSDPipeline.from_pretrained(folder, torch_dtype=torch.float32)  # weights are fp16
        pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                                           algorithm_type="dpmsolver++")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, steps=25):
    return pipe(PROMPT, num_frames=8, num_inference_steps=steps, guidance_scale=9.0,
                generator=torch.Generator().manual_seed(0), output_type="np").frames


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from t2vlab.toy import toy_checkpoint

    folder = toy_checkpoint()
    pipes = {"diffusers": load("diffusers", folder), "ours": load("ours", folder)}
    for pipe in pipes.values():  # warm-up
        generate(pipe, steps=2)
    results, frames = {k: [] for k in pipes}, {}
    for _ in range(args.repeats):
        for name, pipe in pipes.items():
            store = {}
            results[name].append(measure(lambda p=pipe, s=store: s.update(frames=generate(p))))
            frames[name] = store["frames"]
    diff = abs(frames["ours"] - frames["diffusers"]).max()
    med = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    mem = {k: mib(statistics.median(m for _, m in v)) for k, v in results.items()}
    names = (("diffusers 0.42.1", "diffusers"), ("t2vlab", "ours"))
    rows = [[label, f"{med[k]:.2f}", mem[k], f"{med[k] / med['diffusers']:.2f}"] for label, k in names]
    print_table(["implementation", "s / video (median)", "extra peak MiB (median)", "time ratio"], rows,
                f"toy checkpoint, one video: 8 frames 64x64, 25 DPM-Solver++ steps, guidance 9, {args.repeats} runs "
                f"each, alternated, {torch.get_num_threads()} threads (max |frame difference| {diff:.1e}); "
                f"aims: under 5 s per video, time ratio <= 1.0")


if __name__ == "__main__":
    main()
