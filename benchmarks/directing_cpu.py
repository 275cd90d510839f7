"""Directing a video on the toy model, on CPU: keyframes, continuation (against FreeNoise), loops and in-between
frames, each measured with the toy's evaluator (the figures of docs/benchmarks.md, "Directing a video").

Frame change: the mean absolute difference of two frames' pixels (all channels, [0, 1]). Centroid: of the pixels
that differ from the background (``toy.evaluate.colours_and_centroids``: the shape and its trail). "Between a and
b": the centroid's projection on the segment a -> b lies on it, with 1 pixel of slack at either end (a centroid
moves by a pixel or so when the shape's soft edge or its trail changes with the shape standing still; the shape
moves about 4.5 pixels a frame); "off the line": the centroid's distance from the line through a and b.

(a) keyframes: a toy clip of each caption gives frames 0 and 7 (as the VAE's latents of the clip); the model draws
    the 8-frame video through them. Error at each keyframe / the VAE's round-trip error of that frame (aim <= 1.5);
    frames 1-6 whose centroid is between the two keyframes' (aim: all); their distance off the line joining them;
    the change at a keyframe (0->1, 6->7) / the median change elsewhere (whether there is a seam for RePaint's
    resampling to fix). Beside: the plain video (no keyframes), and the keyframes released for the last 20% of the
    steps (``keyframe_schedule=0.8``).
(a') resampling: (a)'s keyframes with DDIM, RePaint's resampling (``keyframe_resample=U``) against holding alone, at
    about the same number of UNet calls (30 steps; 15 x 2; 10 x 3: (N - 1) U + 1 calls), beside the plain video, the
    release at 0.8 and holding with 10 steps (what U = 3 adds to its steps); the seam as in (a), its mean and max too.
(b) continuation: three chunks of 8 frames (``pipe.extend``, overlap 4: 16 frames), chained as latents; the
    evaluator on each chunk (a caption counts when all three read its colour and direction; aim >= 90%); each
    seam's change / the median change within the chunks, the seams left out (aim <= 2). Beside, the same 16 frames
    in one pass, plain and with FreeNoise (windows of 8, stride 4), read on the same three 8-frame windows.
    ``--more`` adds the chunks chained as pixels (through the VAE) and a story (there, back, there again);
    ``--slow`` runs (b) on slow shapes (the capstone's LoRA loaded, "slow red circle moving left"; ``--slow-lora
    FOLDER`` another, e.g. benchmarks/continuation_windows.py's), and
    ``--continuation-resample U`` with RePaint's resampling of the held frames (DDIM in place of DPM-Solver++).
(c) loops: ``loop=True`` against plain 8-frame videos: the last-to-first change / the median change (aim: at most
    half of plain's), the median change / plain's (aim >= 0.5: still moving), what the evaluator reads, and what
    the shape does: how far it travels along the caption's direction against plain, and the share of videos in
    which it turns back (steps of more than 1 px both ways along that direction) or wraps around (a jump of more
    than half the frame between consecutive frames).
(d) in-between frames: the even frames (0, 2, 4, 6) of a generated video, interpolated by 2 to 7 frames: the
    direction the evaluator reads, against the source's (aim >= 90% the same), and new frames whose centroid is
    between their neighbours' (aim: all); the error of each new frame against the generated odd frame it stands
    for, beside a cross-fade (each new frame the mean of its two neighbours). Sampled as (a)-(c) are, and with
    RePaint's resampling of the held frames (DDIM, 10 steps x U = 3, as in (a')).

    python -m benchmarks.directing_cpu [--part keyframes|resampling|continuation|loops|
                                              interpolation|all]
                                       [--captions 16] [--continuation-captions 48] [--seeds 1] [--steps 10]
                                       [--more] [--slow [--slow-lora FOLDER]] [--continuation-resample U] [--strip DIR]

``--captions`` sets how many of the toy's 48 captions parts (a), (a'), (c) and (d) use (16: every third, all colours
and directions, the shapes in turn), ``--continuation-captions`` those of (b) (48: all, the issue's count). 10
DPM-Solver++ steps (the toy's recommended 25 would not fit (b) over 48 captions into 10 minutes on one thread); (a')
has its own DDIM steps (about 30 UNet calls a row, ``--steps`` not read).
``--quick``: 4 captions everywhere, 8 steps (a smoke run). ``--strip DIR`` writes PNG strips of a few videos of
each part.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import print_table

SLACK_PX = 1.0
AXIS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}  # direction -> (centroid index, sign)


def load():
    from t2vlab import TextToVideoPipeline
    from t2vlab.schedulers import from_name

    pipe = TextToVideoPipeline.from_pretrained("toy")
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------- measures
def changes(video):
    """The F - 1 frame-to-frame changes of a video (F, H, W, 3): mean |f[t + 1] - f[t]|."""
    video = torch.as_tensor(video)
    return (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))


def keyframe_seam(video):
    """The change into frame 0's successor and out of frame 7's predecessor (0->1, 6->7) over the median change
    between (1->2 ... 5->6): 1 when the held frames join the video as smoothly as the rest."""
    d = changes(video)
    return ((d[0] + d[-1]) / 2 / d[1:-1].median()).item()


def wrap_change(video):
    """The change from the last frame back to the first (what a loop shows at its seam)."""
    video = torch.as_tensor(video)
    return (video[0] - video[-1]).abs().mean().item()


def along_across(c, a, b):
    """Centroid c against the segment a -> b: (how far along it, as a share of its length, 0 at a and 1 at b;
    how far from the line through it, in pixels)."""
    c, a, b = torch.tensor(c), torch.tensor(a), torch.tensor(b)
    ab = b - a
    length = ab.norm().clamp_min(1e-6)
    along = torch.dot(c - a, ab) / length
    across = (c - a - along * ab / length).norm()
    return (along / length).item(), across.item()


def between(c, a, b, slack=SLACK_PX) -> bool:
    """Whether centroid c lies between a and b along the segment a -> b (``slack`` pixels at either end)."""
    if c is None or a is None or b is None:
        return False
    share, _ = along_across(c, a, b)
    length = math.dist(a, b)
    return -slack <= share * length <= length + slack


def centres(video):
    """Each frame's centroid (x, y) of the shape and its trail, None where no shape is seen."""
    from t2vlab.toy.evaluate import colours_and_centroids

    return [p for _, p in colours_and_centroids(video)]


def generate(pipe, captions, seed, steps, **kwargs):
    g = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(captions))]
    return pipe(captions, num_inference_steps=steps, generator=g, **kwargs).frames


def pct(xs):
    return f"{sum(xs) / max(len(xs), 1):.1%}"


def median(xs):
    return f"{statistics.median(xs):.2f}" if xs else "-"


def save_strip(videos, titles, path):
    import matplotlib

    matplotlib.use("Agg")  # a script: no notebook backend to keep
    import matplotlib.pyplot as plt

    frames = max(len(v) for v in videos)
    fig, axes = plt.subplots(len(videos), frames, figsize=(0.9 * frames, 1.15 * len(videos)), squeeze=False)
    for r, (video, title) in enumerate(zip(videos, titles)):
        for f in range(frames):
            axes[r, f].set_axis_off()
            if f < len(video):
                axes[r, f].imshow(torch.as_tensor(video[f]).clamp(0, 1).numpy())
        axes[r, 0].set_title(title, loc="left", fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.04, hspace=0.45)
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # --strip names a folder; made if missing
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print("wrote", path)


# ----------------------------------------------------------------------------------------- (a) keyframes
def keyframes_part(pipe, combos, seeds, steps, strip=None):
    from t2vlab.toy import data

    settings = {"off (plain video)": None, "keyframes 0 and 7": {}, "released at 0.8": {"keyframe_schedule": 0.8}}
    rows, shown = [], []
    for name, extra in settings.items():
        ratio, inside, seam, off_line, ordered = [], [], [], [], []
        for seed in seeds:
            clips = torch.cat([data.make_clips(1, seed=seed, combos=[c])[0] for c in combos])  # (N, 8, 64, 64, 3)
            z = pipe.encode_video(clips, sample=False)  # each clip's frames as latents: one keyframe per video
            round_trip = pipe.decode_latents(z)
            kwargs = {} if extra is None else dict(keyframes={0: z[:, :, 0], 7: z[:, :, 7]}, **extra)
            videos = generate(pipe, [data.caption(*c) for c in combos], seed, steps, num_frames=8, **kwargs)
            for i, c in enumerate(combos):
                video = torch.as_tensor(videos[i])
                for k in (0, 7):
                    vae_error = (round_trip[i, k] - clips[i, k]).abs().mean()
                    ratio.append(((video[k] - clips[i, k]).abs().mean() / vae_error).item())
                ends = centres(round_trip[i])  # where the held frames' shapes come back (the VAE moves the trail)
                got = centres(video)
                inside += [between(got[f], ends[0], ends[7]) for f in range(1, 7)]
                placed = [along_across(got[f], ends[0], ends[7]) for f in range(8) if got[f] is not None]
                off_line += [across for _, across in placed[1:-1]]
                ordered.append(all(p[0] < q[0] for p, q in zip(placed, placed[1:])))
                seam.append(keyframe_seam(video))
                if i < 3 and seed == seeds[0]:
                    shown.append((video, f"{name}: {data.caption(*c)}"))
        rows.append([name, len(ratio) // 2, median(ratio), f"{max(ratio):.2f}", pct(inside), median(off_line),
                     pct(ordered), median(seam)])
        print(*rows[-1], flush=True)
    print_table(["keyframes", "videos", "keyframe error / VAE round trip (median)", "(max)",
                 "frames 1-6 between the keyframes", "px off their line (median)", "videos in order",
                 "change at a keyframe / elsewhere (median)"], rows,
                f"(a) Keyframes: frames 0 and 7 of a toy clip held, {steps} DPM-Solver++ steps, guidance 9")
    if strip:
        save_strip([v for v, _ in shown], [t for _, t in shown], f"{strip}/keyframes.png")


# ---------------------------------------------------------------------------------- (a') resampling
RESAMPLING = {  # name: (steps, U, pipeline arguments; None: no keyframes)
    "off (plain video)": (30, 1, None),
    "keyframes 0 and 7": (30, 1, {}),
    "released at 0.8": (30, 1, {"keyframe_schedule": 0.8}),
    "keyframes, 10 steps": (10, 1, {}),
    "RePaint U=2": (15, 2, {"keyframe_resample": 2}),
    "RePaint U=3": (10, 3, {"keyframe_resample": 3}),
}


def resampling_part(pipe, combos, seeds, strip=None):
    """(a) again with DDIM (RePaint's resampling needs a sampler that keeps nothing between steps), each row at
    about 30 UNet calls: 30 steps, 15 x 2, 10 x 3 ((N - 1) U + 1 calls: the last step is taken once)."""
    from t2vlab.schedulers import from_name
    from t2vlab.toy import data

    kept, pipe.scheduler = pipe.scheduler, from_name("ddim", pipe.scheduler.config)
    rows, shown = [], []
    try:
        for name, (steps, passes, extra) in RESAMPLING.items():
            ratio, inside, seam, t0 = [], [], [], time.perf_counter()
            for seed in seeds:
                clips = torch.cat([data.make_clips(1, seed=seed, combos=[c])[0] for c in combos])
                z = pipe.encode_video(clips, sample=False)
                round_trip = pipe.decode_latents(z)
                kwargs = {} if extra is None else dict(keyframes={0: z[:, :, 0], 7: z[:, :, 7]}, **extra)
                videos = generate(pipe, [data.caption(*c) for c in combos], seed, steps, num_frames=8, **kwargs)
                for i, c in enumerate(combos):
                    video = torch.as_tensor(videos[i])
                    ratio += [((video[k] - clips[i, k]).abs().mean() / (round_trip[i, k] - clips[i, k]).abs().mean()
                               ).item() for k in (0, 7)]
                    ends, got = centres(round_trip[i]), centres(video)
                    inside += [between(got[f], ends[0], ends[7]) for f in range(1, 7)]
                    seam.append(keyframe_seam(video))
                    if i < 3 and seed == seeds[0]:
                        shown.append((video, f"{name}: {data.caption(*c)}"))
            seconds = (time.perf_counter() - t0) / (len(seeds) * len(combos))
            rows.append([name, f"{steps} x {passes}", (steps - 1) * passes + 1, len(seam), median(seam),
                         f"{statistics.mean(seam):.2f}", f"{max(seam):.2f}", median(ratio), pct(inside),
                         f"{seconds:.2f}"])
            print(*rows[-1], flush=True)
    finally:
        pipe.scheduler = kept
    print_table(["keyframes", "steps x U", "UNet calls", "videos", "change at a keyframe / elsewhere (median)",
                 "(mean)", "(max)", "keyframe error / VAE round trip (median)", "frames 1-6 between the keyframes",
                 "s / video"], rows,
                "(a') RePaint's resampling: frames 0 and 7 of a toy clip held, DDIM, guidance 9, about 30 UNet calls")
    if strip:
        save_strip([v for v, _ in shown], [t for _, t in shown], f"{strip}/resampling.png")


# ------------------------------------------------------------------------------------- (b) continuation
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
CONTINUATIONS = {  # name: (how: "latent", "pt" or "one pass"; FreeNoise; a story; only with --more)
    "extend, latents held": ("latent", False, False, False),
    "one pass, plain": ("one pass", False, False, False),
    "one pass, FreeNoise (8, stride 4)": ("one pass", True, False, False),
    "extend, pixels held (through the VAE)": ("pt", False, False, True),
    "story (extend, latents): there, back, there again": ("latent", False, True, True),
}


def chunk_captions(combo, story):
    """The caption of each of the three chunks: the same three times, or a story that turns back and again."""
    colour, shape, direction = combo
    turns = (direction, OPPOSITE[direction], direction) if story else (direction,) * 3
    return [(colour, shape, d) for d in turns]


def continuation_part(pipe, combos, seeds, steps, overlap=4, more=False, strip=None, slow=False, resample=1):
    from t2vlab.toy import speed
    from t2vlab.toy.evaluate import colour_and_direction

    def caption(colour, shape, direction):  # --slow: "slow red circle moving left", the capstone's LoRA loaded
        return speed.caption(colour, shape, direction, speed=speed.SPEED_WORD if slow else None)

    held = {"keyframe_resample": resample} if resample > 1 else {}  # --continuation-resample U (DDIM)

    new = 8 - overlap
    frames = 8 + 2 * new
    starts = [0, new, 2 * new]  # the three chunks' frames: [start, start + 8)
    seams_at = [7, 7 + new]  # changes between the last given frame and the first new one
    rows, shown = [], []
    for name, (how, free_noise, story, extra) in CONTINUATIONS.items():
        if extra and not more:
            continue
        ok, per_chunk, seam, worst, t0 = [], [], [], [], time.perf_counter()
        from_last, from_clip = [], []  # the first new frame's centroid: px from the last given one's, from chunk 1's
        # frame at the same index (where a fresh clip puts its shape at that frame)
        for seed in seeds:
            plots = [chunk_captions(c, story) for c in combos]  # per video, the three chunks' (colour, shape, dir)
            if how == "one pass":
                if free_noise:
                    pipe.enable_free_noise(context_length=8, context_stride=4)
                try:
                    videos = torch.as_tensor(generate(pipe, [caption(*p[0]) for p in plots], seed, steps,
                                                      num_frames=frames))
                finally:
                    pipe.disable_free_noise()
            else:
                video = generate(pipe, [caption(*p[0]) for p in plots], seed, steps, num_frames=8,
                                 output_type=how)
                for chunk in (1, 2):
                    g = [torch.Generator().manual_seed(seed * 1000 + 100 * chunk + i) for i in range(len(combos))]
                    video = pipe.extend(video, [caption(*p[chunk]) for p in plots], num_frames=8, overlap=overlap,
                                        num_inference_steps=steps, generator=g, output_type=how, **held).frames
                videos = pipe.decode_latents(video) if how == "latent" else video
            for i, plot in enumerate(plots):
                reads = [colour_and_direction(videos[i][s:s + 8]) for s in starts]
                oks = [seen == (c[0], c[2]) for seen, c in zip(reads, plot)]
                ok.append(all(oks))
                per_chunk += oks
                d = changes(videos[i])
                inside = torch.stack([d[j] for j in range(len(d)) if j not in seams_at]).median()
                seam += [(d[j] / inside).item() for j in seams_at]
                worst.append((d.max() / inside).item())
                c = centres(videos[i])
                if None not in (c[7], c[8], c[8 - new]):
                    from_last.append(math.dist(c[8], c[7]))
                    from_clip.append(math.dist(c[8], c[8 - new]))
                if i < 3 and seed == seeds[0]:
                    shown.append((videos[i], f"{name}: {caption(*plot[0])}"))
        seconds = (time.perf_counter() - t0) / (len(seeds) * len(combos))
        rows.append([name, len(ok), pct(ok), pct(per_chunk), median(seam), f"{max(seam):.2f}",
                     pct([s <= 2 for s in seam]), median(worst), f"{median(from_last)} / {median(from_clip)}",
                     f"{seconds:.1f}"])
        print(*rows[-1], flush=True)
    print_table([f"{frames} frames", "videos", "all 3 chunks right", "chunks right",
                 "change at a seam / median elsewhere (median)", "(max)", "seams <= 2x",
                 "largest change / median (median)", f"frame 8: px from frame 7 / from frame {8 - new} (median)",
                 "s / video"], rows,
                f"(b) Continuation: 3 chunks of 8 frames, overlap {overlap}, against one pass; {steps} "
                f"{type(pipe.scheduler).__name__} steps{f', RePaint U = {resample}' if held else ''}, guidance 9 (one "
                f"pass read at the same frames){'; slow shapes, the capstone LoRA loaded' if slow else ''}")
    if strip:
        save_strip([v for v, _ in shown], [t for _, t in shown], f"{strip}/continuation.png")


# --------------------------------------------------------------------------------------------- (c) loops
def travel(path, direction):
    """The shape's positions along the caption's direction, px (larger: further that way), frames without it left
    out."""
    axis, sign = AXIS[direction]
    return [sign * p[axis] for p in path if p is not None]


def loops_part(pipe, combos, seeds, steps, strip=None):
    from t2vlab.toy import data
    from t2vlab.toy.evaluate import colour_and_direction

    results, shown = {}, []
    for loop in (False, True):
        wrap, moving, colour, direction, span, back, wraps = [], [], [], [], [], [], []
        for seed in seeds:
            videos = generate(pipe, [data.caption(*c) for c in combos], seed, steps, num_frames=8, loop=loop)
            for i, c in enumerate(combos):
                d = changes(videos[i])
                wrap.append(wrap_change(videos[i]) / d.median().item())
                moving.append(d.median().item())
                seen = colour_and_direction(videos[i])
                colour.append(seen[0] == c[0])
                direction.append(seen[1] == c[2])
                along = travel(centres(videos[i]), c[2])
                steps_along = [b - a for a, b in zip(along, along[1:])]
                span.append(max(along) - min(along) if along else 0.0)
                back.append(any(s > 1 for s in steps_along) and any(s < -1 for s in steps_along))
                wraps.append(any(abs(s) > 32 for s in steps_along))
                if i < 4 and seed == seeds[0]:
                    shown.append((videos[i], f"{'loop' if loop else 'plain'}: {data.caption(*c)}, read {seen}"))
        results[loop] = (wrap, moving, colour, direction, span, back, wraps)
    rows = []
    plain_moving, plain_span = statistics.median(results[False][1]), statistics.median(results[False][4])
    for loop, (wrap, moving, colour, direction, span, back, wraps) in results.items():
        rows.append(["loop=True" if loop else "plain", len(wrap), median(wrap), f"{statistics.mean(wrap):.2f}",
                     f"{statistics.median(moving) / plain_moving:.2f}", pct(colour), pct(direction),
                     f"{statistics.median(span):.1f} ({statistics.median(span) / plain_span:.2f}x)", pct(back),
                     pct(wraps)])
        print(*rows[-1], flush=True)
    print_table(["8 frames", "videos", "last-to-first change / median change (median)", "(mean)",
                 "median change / plain's", "colour read", "direction read (first to last frame)",
                 "px travelled along the caption's direction (median)", "turns back", "wraps around"], rows,
                f"(c) Loops: {steps} DPM-Solver++ steps, guidance 9")
    if strip:
        save_strip([v for v, _ in shown], [t for _, t in shown], f"{strip}/loops.png")


# ---------------------------------------------------------------------------------- (d) in-between frames
def interpolation_part(pipe, combos, seeds, steps, strip=None):
    """(d): the even frames of a generated video in-betweened by 2, as sampled (``steps`` of the pipeline's
    sampler) and with RePaint's resampling of the held frames (DDIM, 10 steps x U = 3: 28 UNet calls), beside a
    cross-fade of the same frames."""
    from t2vlab.schedulers import from_name
    from t2vlab.toy import data
    from t2vlab.toy.evaluate import colour_and_direction

    variants = [(f"interpolate(even frames, factor=2), {steps} steps", None, steps, {}),
                ("the same, RePaint's resampling U = 3 (DDIM 10 steps: 28 UNet calls)", "ddim", 10,
                 {"keyframe_resample": 3})]
    captions = [data.caption(*c) for c in combos]
    sources = {seed: torch.as_tensor(generate(pipe, captions, seed, steps, num_frames=8)) for seed in seeds}
    rows, shown, kept = [], [], pipe.scheduler
    try:
        for label, sampler, n, extra in variants:
            pipe.scheduler = kept if sampler is None else from_name(sampler, kept.config)
            same, inside, err, caption_ok = [], [], [], []
            for seed, source in sources.items():
                g = [torch.Generator().manual_seed(seed * 1000 + 500 + i) for i in range(len(combos))]
                videos = torch.as_tensor(pipe.interpolate(source[:, 0::2], captions, factor=2, num_inference_steps=n,
                                                          generator=g, **extra).frames)  # (N, 7, ...)
                for i, c in enumerate(combos):
                    got, src = colour_and_direction(videos[i]), colour_and_direction(source[i, 0::2])
                    same.append(got[1] == src[1])
                    caption_ok.append(got[1] == c[2])
                    c_new = centres(videos[i])
                    inside += [between(c_new[f], c_new[f - 1], c_new[f + 1]) for f in (1, 3, 5)]
                    err += [(videos[i, f] - source[i, f]).abs().mean().item() for f in (1, 3, 5)]
                    if i < 3 and seed == seeds[0] and sampler is None:
                        shown += [(source[i, :7], f"source: {captions[i]}"),
                                  (videos[i], "interpolated from 0, 2, 4, 6")]
            rows.append([label, len(same), pct(same), pct(caption_ok), pct(inside), f"{statistics.mean(err):.4f}"])
    finally:
        pipe.scheduler = kept
    fade_inside, fade_err = [], []
    for source in sources.values():
        for i in range(len(combos)):
            fade = source[i, 0:7].clone()  # a cross-fade: the even frames kept, each odd one the mean of its two
            fade[1::2] = (source[i, 0:6:2] + source[i, 2:7:2]) / 2
            c_fade = centres(fade)
            fade_inside += [between(c_fade[f], c_fade[f - 1], c_fade[f + 1]) for f in (1, 3, 5)]
            fade_err += [(fade[f] - source[i, f]).abs().mean().item() for f in (1, 3, 5)]
    rows.append(["cross-fade (no model: the mean of the two neighbours)", len(fade_inside) // 3, "", "",
                 pct(fade_inside), f"{statistics.mean(fade_err):.4f}"])
    print_table(["4 -> 7 frames", "videos", "direction as the source's", "direction as the caption's",
                 "new frames between their neighbours", "mean |new - generated odd frame|"], rows,
                f"(d) In-between frames: sources of {steps} DPM-Solver++ steps, guidance 9")
    if strip:
        save_strip([v for v, _ in shown], [t for _, t in shown], f"{strip}/interpolation.png")


def subset(count):
    """``count`` of the toy's 48 (colour, shape, direction): all, or every third (all colours and directions, the
    shapes in turn), cut to ``count``."""
    from t2vlab.toy.data import ALL_COMBOS

    return list(ALL_COMBOS) if count >= len(ALL_COMBOS) else list(ALL_COMBOS[::3])[:count]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("keyframes", "resampling", "continuation", "loops", "interpolation", "all"),
                    default="all")
    ap.add_argument("--captions", type=int, default=16, help="for (a), (c), (d); 16: every third of the 48")
    ap.add_argument("--continuation-captions", type=int, default=48, help="for (b); 48: all")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--more", action="store_true", help="(b) also with pixels held and a story")
    ap.add_argument("--slow", action="store_true", help="(b) on slow shapes (the capstone's LoRA loaded)")
    ap.add_argument("--slow-lora", default=None, metavar="FOLDER",
                    help="with --slow: this LoRA in the capstone's place (benchmarks/continuation_windows.py)")
    ap.add_argument("--continuation-resample", type=int, default=1, metavar="U",
                    help="(b) with RePaint's resampling (U > 1: DDIM in place of DPM-Solver++)")
    ap.add_argument("--quick", action="store_true", help="4 captions everywhere, 8 steps: a smoke run")
    ap.add_argument("--strip", default=None, help="write PNG strips of a few videos per part into this folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.captions, args.continuation_captions, args.steps = 4, 4, 8
    torch.set_num_threads(args.threads)
    combos, long_combos = subset(args.captions), subset(args.continuation_captions)
    seeds, pipe, t0 = list(range(args.seeds)), load(), time.perf_counter()
    print(f"{len(combos)} captions ({len(long_combos)} for continuation) x {len(seeds)} seed(s), {args.steps} steps, "
          f"{args.threads} thread(s)")
    if args.part in ("keyframes", "all"):
        keyframes_part(pipe, combos, seeds, args.steps, args.strip)
    if args.part in ("resampling", "all"):
        resampling_part(pipe, combos, seeds, args.strip)
    if args.part in ("continuation", "all"):
        if args.slow:
            from t2vlab.toy.speed import slow_lora

            pipe.load_lora_weights(args.slow_lora or slow_lora())
        if args.continuation_resample > 1:
            from t2vlab.schedulers import from_name

            pipe.scheduler = from_name("ddim", pipe.scheduler.config)
        continuation_part(pipe, long_combos, seeds, args.steps, args.overlap, args.more, args.strip, args.slow,
                          args.continuation_resample)
    if args.part in ("loops", "all"):
        loops_part(pipe, combos, seeds, args.steps, args.strip)
    if args.part in ("interpolation", "all"):
        interpolation_part(pipe, combos, seeds, args.steps, args.strip)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
