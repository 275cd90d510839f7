"""Long videos on the toy model, with and without FreeNoise, on CPU (the figures of docs/benchmarks.md).

(a) memory and time of one denoising step (the UNet on a batch of 2, as under classifier-free
    guidance) at 16, 64 and 256 frames, plain and with FreeNoise's windowed temporal attention
    (windows of 8 frames, the toy's clip length, 4 apart), for the fused attention kernel ("sdpa")
    and the formula written out ("math", which holds the F x F attention map);
(b) what 32-frame videos look like, plain and with FreeNoise: colour constancy, direction per
    8-frame window, and the largest frame-to-frame jump of the shape (``toy.evaluate.long_video_report``);
(c) FreeU and FreeInit on the toy's own 8-frame clips: the evaluator's accuracy on its 48 captions
    and the time per video, beside plain sampling.

    python -m benchmarks.long_video_cpu [--part memory|quality|extras|all] [--frames 16 64 256] [--seeds 4]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import mib, peak_memory, print_table, time_call

CAPTIONS = [("red", "square", "right"), ("green", "circle", "left"), ("blue", "triangle", "down"),
            ("yellow", "square", "up")]


def load():
    from t2vlab import TextToVideoPipeline
    from t2vlab.schedulers import from_name

    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def memory_table(pipe, frame_counts, repeats):
    unet, rows = pipe.unet, []
    text, _ = pipe.encode_prompt(["a red square moving right"] * 2, "cpu", do_classifier_free_guidance=False)
    size = unet.config.sample_size
    for backend in ("sdpa", "math"):
        unet.set_attention_backend(backend)
        for frames in frame_counts:
            x = torch.randn(2, unet.config.in_channels, frames, size, size, generator=torch.Generator().manual_seed(0))
            for free_noise in (False, True):
                if free_noise:
                    unet.enable_free_noise(context_length=8, context_stride=4)
                else:
                    unet.disable_free_noise()

                def step(x=x):
                    with torch.no_grad():
                        return unet(x, 500, text)

                seconds = time_call(step, repeats=repeats, warmup=1)
                peak = statistics.median(peak_memory(step) for _ in range(2))
                rows.append([backend, frames, "on" if free_noise else "off", f"{seconds:.3f}", mib(peak)])
                print(*rows[-1], flush=True)
    unet.disable_free_noise()
    unet.set_attention_backend("sdpa")
    print_table(["attention", "frames", "FreeNoise", "s / step", "extra peak MiB"], rows,
                "One denoising step of the toy UNet (batch 2)")


def quality_table(pipe, frames, seeds, steps):
    from t2vlab.toy.data import caption
    from t2vlab.toy.evaluate import long_video_report

    rows = []
    for free_noise in (False, True):
        if free_noise:
            pipe.enable_free_noise(context_length=8, context_stride=4)
        else:
            pipe.disable_free_noise()
        reports = []
        for colour, shape, direction in CAPTIONS:
            videos = pipe(caption(colour, shape, direction), num_frames=frames, num_inference_steps=steps,
                          num_videos_per_prompt=len(seeds),
                          generator=[torch.Generator().manual_seed(s) for s in seeds]).frames
            reports += [long_video_report(v, colour, direction) for v in videos]
            print(free_noise, caption(colour, shape, direction), [r["windows"] for r in reports[-len(seeds):]],
                  flush=True)
        jumps = sorted(r["max_jump"] for r in reports)
        rows.append(["on" if free_noise else "off", len(reports),
                     f"{statistics.mean(r['colour'] for r in reports):.1%}",
                     f"{statistics.mean(r['direction'] for r in reports):.1%}",
                     f"{statistics.median(jumps):.1f}", f"{jumps[-1]:.1f}",
                     f"{sum(j > 20 for j in jumps)}/{len(jumps)}",
                     f"{statistics.mean(r['shown'] for r in reports):.1%}"])
    pipe.disable_free_noise()
    print_table(["FreeNoise", "videos", "colour constancy (frames)", "direction (8-frame windows)",
                 "largest jump px (median)", "largest jump px (max)", "videos with a jump > 20 px",
                 "frames showing a shape"], rows, f"{frames}-frame toy videos, {steps} DPM-Solver++ steps, guidance 9")


def extras_table(pipe, steps):
    import time

    from t2vlab.toy.evaluate import evaluate

    settings = {"plain": {}, "FreeU (ms-1.7b values: s1 0.9, s2 0.2, b1 1.2, b2 1.4)": {"freeu": (0.9, 0.2, 1.2, 1.4)},
                "FreeU (SD 2.1 values: s1 0.9, s2 0.2, b1 1.1, b2 1.2)": {"freeu": (0.9, 0.2, 1.1, 1.2)},
                "FreeInit (3 passes, butterworth 0.25/0.25)": {"free_init": 3}}
    rows = []
    for name, what in settings.items():
        if "freeu" in what:
            pipe.enable_freeu(*what["freeu"])
        if "free_init" in what:
            pipe.enable_free_init(num_iters=what["free_init"])
        t0 = time.perf_counter()
        _, summary, videos = evaluate(pipe, seeds=(0,), steps=steps)
        seconds = (time.perf_counter() - t0) / len(videos)
        pipe.disable_freeu()
        pipe.disable_free_init()
        rows.append([name, summary["all"]["n"], f"{summary['all']['colour']:.1%}",
                     f"{summary['all']['direction']:.1%}", f"{seconds:.2f}"])
        print(*rows[-1], flush=True)
    print_table(["setting", "videos", "colour", "direction", "s / video"], rows,
                f"8-frame toy videos (its 48 captions, seed 0), {steps} DPM-Solver++ steps, guidance 9")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("memory", "quality", "extras", "all"), default="all")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256], help="for the memory table")
    ap.add_argument("--long", type=int, default=32, help="frames of the quality table's videos")
    ap.add_argument("--seeds", type=int, default=4, help="videos per caption (4 captions)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load()
    if args.part in ("memory", "all"):
        memory_table(pipe, args.frames, args.repeats)
    if args.part in ("quality", "all"):
        quality_table(pipe, args.long, list(range(args.seeds)), args.steps)
    if args.part in ("extras", "all"):
        extras_table(pipe, args.steps)


if __name__ == "__main__":
    main()
