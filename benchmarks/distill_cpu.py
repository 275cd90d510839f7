"""The distilled toy student (``t2vlab/data/toy_lcm_lora``) against its teacher, the shipped toy model, on this CPU.

(a) Accuracy: ``t2vlab.toy.evaluate`` over the 48 captions x ``--seeds`` seeds (0, 1, 2, ...) for the teacher at
    25 DPM-Solver++ steps (guidance 9: the toy's recommended setting), at 1/2/4/8 DPM-Solver++ steps and at 4 DDIM
    steps (guidance 9, for contrast), and the student at 1/2/4/8 LCM steps (guidance 1.0: one UNet pass per step).
    The seconds per video of these runs (48 videos per call) are printed beside them.
(b) Time per video: one video per call (8 frames of 64x64, one prompt, seed 0), the settings interleaved round by
    round (teacher 25, teacher 4, student 4, student 1, ...), medians, and each setting's ratio to the teacher at
    25 steps measured in the same rounds. The machine is shared: compare settings only by their ratios.

    python benchmarks/distill_cpu.py [--seeds 3] [--repeats 7] [--threads 1] [--part both|accuracy|time]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import print_table  # noqa: E402

PROMPT = "a red circle moving left"
# (label, "teacher" or "student", scheduler, steps, guidance); the student's scheduler is its own LCM
SETTINGS = [("teacher, DPM-Solver++ 25 steps", "teacher", "dpm++", 25, 9.0),
            ("teacher, DPM-Solver++ 8 steps", "teacher", "dpm++", 8, 9.0),
            ("teacher, DPM-Solver++ 4 steps", "teacher", "dpm++", 4, 9.0),
            ("teacher, DDIM 4 steps", "teacher", "ddim", 4, 9.0),
            ("teacher, DPM-Solver++ 2 steps", "teacher", "dpm++", 2, 9.0),
            ("teacher, DPM-Solver++ 1 step", "teacher", "dpm++", 1, 9.0),
            ("student, LCM 8 steps", "student", None, 8, 1.0),
            ("student, LCM 4 steps", "student", None, 4, 1.0),
            ("student, LCM 2 steps", "student", None, 2, 1.0),
            ("student, LCM 1 step", "student", None, 1, 1.0)]


def pipelines():
    from t2vlab import TextToVideoPipeline
    from t2vlab.distill import load_distilled

    teacher, student = TextToVideoPipeline.from_pretrained("toy"), TextToVideoPipeline.from_pretrained("toy")
    load_distilled(student)
    for p in (teacher, student):
        p.set_progress_bar_config(disable=True)
    return {"teacher": teacher, "student": student}


def use(pipe, scheduler):
    from t2vlab.schedulers import from_name

    if scheduler is not None:
        pipe.scheduler = from_name(scheduler, pipe.scheduler.config)


def unet_passes(who, steps, guidance):
    return steps * (2 if guidance > 1 else 1)


def accuracy(pipes, seeds):
    from t2vlab.toy.evaluate import evaluate

    rows, results = [], {}
    for label, who, scheduler, steps, guidance in SETTINGS:
        t0, c0 = time.perf_counter(), time.process_time()
        found, summary, _ = evaluate(pipes[who], seeds=range(seeds), steps=steps, guidance_scale=guidance,
                                     scheduler=scheduler)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = summary["all"]["n"]
        results[label] = (summary, found)
        rows.append([label, unet_passes(who, steps, guidance), f"{summary['all']['colour']:.1%}",
                     f"{summary['all']['direction']:.1%}", f"{summary['held_out']['colour']:.1%}",
                     f"{summary['held_out']['direction']:.1%}", f"{wall / n:.3f}", f"{cpu / n:.3f}"])
        print(f"  {label}: {summary['all']} in {wall:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    print_table(["setting", "UNet passes / video", "colour", "direction", "held-out colour", "held-out direction",
                 "wall s / video", "CPU s / video"], rows,
                f"(a) the evaluator, 48 captions x {seeds} seeds ({48 * seeds} videos per setting), 48 per call")
    for label in ("teacher, DPM-Solver++ 4 steps", "student, LCM 4 steps"):
        missed = [r for r in results[label][1] if not (r["colour_ok"] and r["direction_ok"])]
        print(f"\n{label}: missed {len(missed)}:", "; ".join(f"{r['caption']} -> {r['colour']}/{r['direction']}"
                                                          for r in missed[:12]))
    return results


def timing(pipes, repeats):
    times = {label: [] for label, *_ in SETTINGS}

    def one(who, scheduler, steps, guidance):
        use(pipes[who], scheduler)
        t0 = time.perf_counter()
        pipes[who](PROMPT, num_frames=8, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    for _, who, scheduler, steps, guidance in SETTINGS:  # warm-up, untimed
        one(who, scheduler, steps, guidance)
    loads = []
    for _ in range(repeats):
        for label, who, scheduler, steps, guidance in SETTINGS:
            times[label].append(one(who, scheduler, steps, guidance))
        loads.append(os.getloadavg()[0])
    base = times[SETTINGS[0][0]]
    rows = []
    for label, who, _, steps, guidance in SETTINGS:
        ratios = [t / b for t, b in zip(times[label], base)]  # against the teacher in the same round
        rows.append([label, unet_passes(who, steps, guidance), f"{statistics.median(times[label]):.3f}",
                     f"{statistics.median(ratios):.3f}", f"{min(ratios):.3f}-{max(ratios):.3f}"])
    print_table(["setting", "UNet passes / video", "s / video (median)", "time ratio to teacher 25 (median)",
                 "ratio range"], rows,
                f"(b) one video per call, interleaved, {repeats} rounds "
                f"(load average {min(loads):.1f}-{max(loads):.1f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--part", choices=("both", "accuracy", "time"), default="both")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    pipes = pipelines()
    if args.part in ("both", "time"):
        timing(pipes, args.repeats)
    if args.part in ("both", "accuracy"):
        accuracy(pipes, args.seeds)


if __name__ == "__main__":
    main()
