"""DeepCache on the shipped toy checkpoint, on this CPU: how much faster, and what it costs.

Speed: one video (8 frames of 64x64, 25 DPM-Solver++ steps, guidance 9, the evaluator's setting),
plain and with DeepCache, runs alternated, medians and the time ratio. Quality: the toy's evaluator
(t2vlab.toy.evaluate: does the video show the asked colour and direction?) over its 48 captions, and the
mean / max absolute frame difference against the plain run of the same seed.

    python benchmarks/deepcache_cpu.py [--repeats 5] [--settings 3,0 2,0 3,1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import print_table  # noqa: E402

PROMPT = "a red circle moving left"


def generate(pipe, steps=25):
    return pipe(PROMPT, num_frames=8, num_inference_steps=steps, guidance_scale=9.0,
                generator=torch.Generator().manual_seed(0), output_type="pt").frames


def switched(pipe, setting):
    """Set DeepCache as ``setting`` ((interval, branch) or None for plain)."""
    pipe.disable_deepcache()
    if setting is not None:
        pipe.enable_deepcache(*setting)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settings", nargs="+", default=["3,0", "2,0", "3,1"], help="INTERVAL,BRANCH pairs")
    ap.add_argument("--seeds", type=int, default=1, help="evaluator seeds (48 videos each)")
    args = ap.parse_args(argv)
    from t2vlab import TextToVideoPipeline
    from t2vlab.schedulers import from_name
    from t2vlab.toy.evaluate import evaluate

    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    settings = [None] + [tuple(int(v) for v in s.split(",")) for s in args.settings]
    label = {s: "plain" if s is None else f"DeepCache interval {s[0]}, branch {s[1]}" for s in settings}

    generate(pipe, steps=2)  # warm-up
    times = {s: [] for s in settings}
    for _ in range(args.repeats):
        for s in settings:
            switched(pipe, s)
            t0 = time.perf_counter()
            generate(pipe)
            times[s].append(time.perf_counter() - t0)

    quality = {}
    for s in settings:
        switched(pipe, s)
        _, summary, videos = evaluate(pipe, seeds=tuple(range(args.seeds)))
        quality[s] = (summary["all"], videos)
    switched(pipe, None)
    plain = quality[None][1]
    med = {s: statistics.median(v) for s, v in times.items()}
    rows = []
    for s in settings:
        summary, videos = quality[s]
        diff = (videos - plain).abs()
        rows.append([label[s], f"{med[s]:.2f}", f"{med[None] / med[s]:.2f}x", f"{summary['colour']:.1%}",
                     f"{summary['direction']:.1%}", f"{diff.mean():.4f}", f"{diff.max():.3f}"])
    print_table(["setting", "s / video (median)", "speed-up", "evaluator colour", "evaluator direction",
                 "mean |frame diff| vs plain", "max |frame diff|"], rows,
                f"toy checkpoint, 8 frames 64x64, 25 DPM-Solver++ steps, guidance 9; timing {args.repeats} runs "
                f"each, alternated, {torch.get_num_threads()} threads; "
                f"evaluator over 48 captions x {args.seeds} seed(s)")


if __name__ == "__main__":
    main()
