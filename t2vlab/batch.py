"""python -m t2vlab batch PROMPTS --out DIR — one video per line of a prompts file, resumable, on N processes.

PROMPTS is a text file: one prompt per line, or a JSON object per line with a prompt and its own
settings (the others come from the command line, then from the checkpoint's recommended ones):

    a red circle moving left
    {"prompt": "a blue square moving up", "seed": 3, "frames": 8, "steps": 20}

Settings a line may set: prompt, negative, seed, frames, steps, guidance, height, width, and for directing
(``t2vlab.techniques``) ``"loop": true`` and ``"keyframes": {"0": "first.png", "7": "last.png"}`` (frames held
to pictures of the video's size; paths as the command line reads them). Lines starting with ``#`` are
comments. A bad line (empty, not JSON, an unknown setting, a bad value) is reported with its line number
and skipped; the rest run, and the exit status is 1.

- Each video's file name is the prompt's first words and a hash of everything that decides its pixels
  (prompt, settings, seed, model, sampler; the keyframe pictures' bytes, not only their paths):
  ``a-red-circle-moving-left-3f2a9c01.mp4``, with a sidecar ``.json`` of its settings. A re-run skips
  the videos whose two files exist (resumable); change a setting and it is a new video.
- Prompts that share their settings (all but prompt and seed) are generated together, up to
  ``--batch-size`` per call. Seeds are per prompt: each video's starting noise is drawn from its own
  seed, so it does not depend on its batch-mates (a video equals ``python -m t2vlab PROMPT --seed S``
  up to float rounding; with the stochastic samplers ddpm and euler-a every call is one prompt, exactly).
- Every setting is checked before the first video: the command line's (argparse refuses ``--fps 0``,
  ``--steps 0``; a 0 is never read as "the default") and each line's, completed (a size the VAE cannot
  take, too many frames: the line is reported and skipped, as a bad line).
- A failing call is retried one prompt at a time; a prompt that fails alone is reported and the rest go on.
- DIR: made (and marked as t2vlab's) when new or empty; an existing folder of someone else's may receive the
  videos, but none of its files is ever replaced. What a killed run left there (temporary files of a process
  that is gone: ``t2vlab.atomic``) is removed when a run starts; a concurrent run's files in progress are kept.
- PROMPTS is UTF-8 (a byte-order mark, as Notepad writes, is skipped); another encoding is an error naming it.
- Under ``accelerate launch --multi_gpu --num_processes N -m t2vlab batch ...`` the calls are dealt out
  between the processes (call k to process k mod N; one GPU each), so each video is written exactly
  once, by the same call it would be in with one process: the same videos as a one-process run. On a
  machine without a GPU the same command starts N CPU processes. (``accelerate launch --cpu`` starts
  ONE process whatever ``--num_processes`` says, unless an MPI hostfile is given: accelerate 1.15's rule;
  the batch is then simply done by that one process; with MPI the processes share it by their MPI ranks.)
  What the launcher said is read by ``t2vlab.launcher``: processes that would not share the work (a
  ``WORLD_SIZE`` without ``RANK``, a rank outside it) are stopped before any model loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import atomic
from .atomic import write_text
from .checks import boolean, cli, integer, number, positive_int, seed
from .compiled import COMPILE_MODES
from .guards import check_size
from .launcher import LaunchError, launched
from .noise import video_noise
from .os_errors import explain
from .schedulers import SCHEDULER_NAMES
from .techniques.prompt_weighting import SYNTAXES
from .video import export_to_video

STOCHASTIC = ("ddpm", "euler-a")  # samplers that draw noise at every step: one prompt per call
SETTINGS = {"prompt": str, "negative": str, "seed": int, "frames": int, "steps": int, "guidance": float,
            "height": int, "width": int, "loop": bool, "keyframes": dict}


FPS = cli(number, float, low=1e-3, high=1000)  # --fps as export_to_video checks it, but before the first video


def add_lora_arguments(ap, videos="the video"):
    """--lora, --lora-weight-name and --lora-scale, as the CLI and batch both take them."""
    ap.add_argument("--lora", action="append", default=[], metavar="SOURCE",
                    help="a LoRA to load (repeatable): a file, a folder, or a Hub id, owner/name[/subfolder], e.g. "
                         "yhzhai/mcm/modelscopet2v-webvid; a known few-step adapter brings its sampler and steps")
    ap.add_argument("--lora-weight-name", default=None, metavar="FILE",
                    help="the file inside --lora's folder or Hub repository (e.g. unet_lora.pt for T2V-Turbo-MS)")
    ap.add_argument("--lora-scale", type=cli(number, float), default=1.0,
                    help=f"the LoRAs' weight for {videos} (default 1.0)")


class BadLine(ValueError):
    pass


class BadPrompts(ValueError):
    """PROMPTS cannot be read at all (not UTF-8, a folder, ...)."""


@dataclass(frozen=True)
class Job:
    """One video: its line in PROMPTS and every setting that decides its pixels."""

    line: int
    prompt: str
    negative: str | None
    seed: int
    frames: int
    steps: int
    guidance: float
    height: int
    width: int
    model: str
    scheduler: str
    prompt_syntax: str = "plain"  # how the prompt is read (techniques.prompt_weighting)
    loop: bool = False  # the last frame flows into the first (techniques.loops)
    keyframes: tuple = ()  # ((frame, picture path, sha256 of the picture's bytes), ...) (techniques.keyframes)
    lora: tuple = ()  # the command line's --lora sources, in the order loaded, and their --lora-scale after them
    #                   (("SOURCE", ...), scale) (t2vlab.lora_loading)

    def settings(self):
        s = asdict(self)
        del s["line"]
        for key, plain in (("prompt_syntax", "plain"), ("loop", False), ("keyframes", ()), ("lora", ())):
            if s[key] == plain:  # left out when plain: a plain job's name is what it always was
                del s[key]
        if self.keyframes:  # as a line writes them
            s["keyframes"] = {str(frame): path for frame, path, _ in self.keyframes}
        return s

    def group(self):
        """What a batch-mate must share: everything but the prompt and the seed."""
        s = self.settings()
        del s["prompt"], s["seed"]
        return json.dumps(s, sort_keys=True)

    @property
    def stem(self):
        identity = self.settings()
        if self.keyframes:  # a picture changed in place is a new video
            identity["pictures"] = [digest for *_, digest in self.keyframes]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        slug = "-".join(re.findall(r"[a-z0-9]+", self.prompt.lower()))[:48].strip("-") or "video"
        return f"{slug}-{digest}"


# ------------------------------------------------------------------------------------ reading PROMPTS
def check_value(key, value):
    """``value`` as setting ``key`` wants it, or BadLine naming both."""
    kind = SETTINGS[key]
    if kind is bool:
        return boolean(key, value, error=BadLine)
    if kind is dict:
        return read_keyframes(value)
    if kind is str:
        if not isinstance(value, str) or (key == "prompt" and not value.strip()):
            raise BadLine(f"{key} must be a non-empty string, got {value!r:.60}")
        return value
    if key == "seed":
        return seed(key, value, error=BadLine)
    if kind is int:
        return integer(key, value, low=1, error=BadLine)
    return number(key, value, low=0, error=BadLine)


def read_keyframes(value):
    """A line's {"frame": "picture path"} -> ((frame, path, sha256 of the file), ...) in frame order."""
    if not isinstance(value, dict) or not value:
        raise BadLine(f"keyframes must be an object {{\"frame\": \"picture path\"}}, got {value!r:.60}")
    held = []
    for frame, path in value.items():
        if not frame.isdigit():
            raise BadLine(f"keyframes: {frame!r} is not a frame index (0, 1, 2, ...)")
        if not isinstance(path, str) or not os.path.isfile(path):
            raise BadLine(f"keyframes[{frame}]: no such picture file {path!r:.60}")
        held.append((int(frame), path, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
    return tuple(sorted(held))


def parse_line(text):
    """One line -> {setting: value} (at least a prompt); BadLine saying what is wrong."""
    text = text.strip()
    if not text:
        raise BadLine("empty line (write a prompt, or start the line with # for a comment)")
    if not text.startswith("{"):
        return {"prompt": text}
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadLine(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(entry, dict):
        raise BadLine("a JSON line must be an object such as {\"prompt\": \"...\", \"seed\": 1}")
    unknown = sorted(set(entry) - set(SETTINGS))
    if unknown:
        raise BadLine(f"unknown setting(s) {unknown}; a line may set {sorted(SETTINGS)}")
    if "prompt" not in entry:
        raise BadLine("no \"prompt\"")
    return {key: check_value(key, value) for key, value in entry.items()}


def read_prompts(path):
    """PROMPTS -> ([(line number, settings)], [problem per bad line]); comment lines are neither. UTF-8, with or
    without a byte-order mark (which would otherwise stick to line 1 and turn its JSON into prompt text)."""
    entries, problems = [], []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.readlines()
    except (UnicodeDecodeError, OSError) as e:
        raise BadPrompts(explain(e, path)) from None
    for line, text in enumerate(lines, start=1):
        if text.lstrip().startswith("#"):
            continue
        try:
            entries.append((line, parse_line(text)))
        except BadLine as e:
            problems.append(f"{path}:{line}: {e}")
    return entries, problems


def make_jobs(entries, args, pipe, scheduler):
    """The settings of each line completed from the command line, then from the checkpoint's."""
    rec = pipe.recommended

    def given(value, default):  # None: not given (a 0 never means "the default")
        return default if value is None else value

    defaults = {"negative": args.negative, "seed": args.seed, "frames": given(args.frames, rec.num_frames),
                "steps": given(args.steps, rec.num_inference_steps),
                "guidance": given(args.guidance, rec.guidance_scale),
                "height": given(args.size, rec.height), "width": given(args.size, rec.width),
                "prompt_syntax": args.prompt_syntax,
                "lora": (tuple(args.lora), args.lora_scale) if args.lora else ()}
    return [Job(line=number, model=str(pipe.name_or_path), scheduler=scheduler, **{**defaults, **entry})
            for number, entry in entries]


def check_jobs(jobs, pipe, path):
    """(the jobs the pipeline can run, a problem per job it would refuse): each job's completed settings checked
    as ``pipe(...)`` checks them (sizes divisible by the VAE's factor, within the caps), before the first video."""
    good, problems = [], []
    for job in jobs:
        try:
            check_size(job.height, job.width, job.frames, pipe.vae.spatial_factor)
        except ValueError as e:
            problems.append(f"{path}:{job.line}: {e}")
        else:
            good.append(job)
    return good, problems


def plan(jobs, batch_size):
    """The calls, in a fixed order: jobs grouped by shared settings (in order of first appearance), each
    group cut into calls of at most ``batch_size`` (1 with a stochastic sampler). A job that appears twice
    (same settings, same seed) is one video."""
    groups, seen = {}, set()
    for job in jobs:
        if job.stem not in seen:
            seen.add(job.stem)
            groups.setdefault(job.group(), []).append(job)
    calls = []
    for group in groups.values():
        size = 1 if group[0].scheduler in STOCHASTIC else batch_size
        calls += [group[i:i + size] for i in range(0, len(group), size)]
    return calls


def done(out, job):
    return (out / f"{job.stem}.mp4").exists() and (out / f"{job.stem}.json").exists()


def replaceable(out, job):
    """Whether what an interrupted run left of ``job`` (its video without its sidecar, or the reverse) may be
    replaced: in a folder t2vlab wrote, or when there is nothing to replace."""
    return atomic.written_by_t2vlab(out) or not any(
        os.path.lexists(out / f"{job.stem}{ext}") for ext in (".mp4", ".json"))


# ------------------------------------------------------------------------------------ generating
def generate(pipe, call):
    """Frames (n, F, H, W, 3) of one call: its prompts together, each from its own seed's noise."""
    first = call[0]
    shape = (1, pipe.unet.config.in_channels, first.frames, first.height // pipe.vae.spatial_factor,
             first.width // pipe.vae.spatial_factor)
    if first.scheduler in STOCHASTIC:  # the sampler draws at every step: the generator, as the single CLI
        noise = {"generator": torch.Generator().manual_seed(first.seed)}
    else:  # the starting noise of each video from its own seed, as video_noise draws it for one video
        noise = {"latents": torch.cat([video_noise(shape, torch.Generator().manual_seed(j.seed), "cpu",
                                                   torch.float32) for j in call])}
    if first.keyframes:
        noise["keyframes"] = {frame: path for frame, path, _ in first.keyframes}
    if first.lora and first.lora[1] != 1.0:  # --lora-scale, as diffusers' pipelines take it
        noise["cross_attention_kwargs"] = {"scale": first.lora[1]}
    return pipe([j.prompt for j in call], negative_prompt=first.negative, num_frames=first.frames,
                height=first.height, width=first.width, num_inference_steps=first.steps,
                guidance_scale=first.guidance, prompt_syntax=first.prompt_syntax, loop=first.loop,
                output_type="pt", **noise).frames


def write(out, job, frames, fps, seconds):
    """The video, then its sidecar (each appears whole or not at all): a job is done when both exist. One of
    the two left by an interrupted run is replaced, in a folder t2vlab wrote only (never someone else's file)."""
    ours = atomic.written_by_t2vlab(out)
    export_to_video(frames, str(out / f"{job.stem}.mp4"), fps=fps, overwrite=ours)
    sidecar = {**job.settings(), "line": job.line, "fps": fps, "video": f"{job.stem}.mp4",
               "seconds": round(seconds, 3)}
    write_text(out / f"{job.stem}.json", json.dumps(sidecar, indent=1) + "\n", overwrite=ours)


def run_call(pipe, call, out, fps, report):
    """Generate and write one call; on failure retry its prompts one at a time. Returns the failures."""
    try:
        start = time.perf_counter()
        frames = generate(pipe, call)
        seconds = (time.perf_counter() - start) / len(call)
        for job, video in zip(call, frames):
            write(out, job, video, fps, seconds)
        return []
    except Exception as e:  # noqa: BLE001  (any error of one prompt must not stop the others)
        if len(call) > 1:
            return [f for job in call for f in run_call(pipe, [job], out, fps, report)]
        said = explain(e) if isinstance(e, OSError) and e.errno is not None else e
        report(f"line {call[0].line} ({call[0].prompt!r:.60}) failed: {type(e).__name__}: {said}")
        return [call[0]]


def process_share():
    """(index, count) of this process among those the launcher started; (0, 1) alone.

    ``accelerate launch`` (like torchrun, which it uses) tells each process RANK, WORLD_SIZE and
    LOCAL_RANK in its environment, MPI launchers their own names for them (``t2vlab.launcher.launched``,
    which refuses what would not split the work). Nothing is exchanged between the processes (the split is
    fixed by the plan), so no process group is needed: the numbers are read, not negotiated.
    """
    rank, world, _ = launched()
    if world > 1 and torch.cuda.is_available():  # one GPU per process: "cuda" means this process's own from here on
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return rank, world


# ------------------------------------------------------------------------------------ the command
def parse_batch_args(argv):
    ap = argparse.ArgumentParser(prog="python -m t2vlab batch", description=(
        "Generate one video per line of PROMPTS (a prompt, or a JSON object with a prompt and its settings) into "
        "DIR, skipping those already there. Under accelerate launch the prompts are shared between the processes."))
    ap.add_argument("prompts", help="text file: one prompt or one JSON object per line")
    ap.add_argument("--out", required=True, help="folder for the videos and their sidecar .json files")
    ap.add_argument("--model", default=None,
                    help="checkpoint (as for python -m t2vlab; default: real on a GPU, else toy)")
    ap.add_argument("--negative", default=None, help="negative prompt for lines that do not set one")
    ap.add_argument("--steps", type=cli(positive_int), default=None, help="denoising steps (default: the checkpoint's)")
    ap.add_argument("--frames", type=cli(positive_int), default=None,
                    help="frames per video (default: the checkpoint's)")
    ap.add_argument("--size", type=cli(positive_int), default=None,
                    help="height and width in pixels (default: the model's)")
    ap.add_argument("--seed", type=cli(seed), default=0, help="seed of lines that do not set one (default 0)")
    ap.add_argument("--guidance", type=cli(number, float, low=0), default=None,
                    help="classifier-free guidance scale (default 9)")
    ap.add_argument("--scheduler", default=None, choices=SCHEDULER_NAMES, help="sampler (default dpm++)")
    ap.add_argument("--fps", type=FPS, default=8,
                    help="frames per second of the files (default 8)")
    ap.add_argument("--prompt-syntax", default="plain", choices=SYNTAXES,
                    help="how the prompts are read: plain text (default), a1111 or compel weights")
    add_lora_arguments(ap, "every video")
    ap.add_argument("--batch-size", type=cli(positive_int), default=4, help="prompts per call at most (default 4)")
    ap.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    ap.add_argument("--offload", action="store_true", help="keep models on the CPU until each runs (GPU)")
    ap.add_argument("--vae-slicing", action="store_true", help="decode one frame at a time")
    ap.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                    help="torch.compile the UNet and the VAE decoder (see python -m t2vlab --help)")
    ap.add_argument("--deepcache", nargs="?", type=cli(positive_int), const=3, default=None, metavar="INTERVAL",
                    help="DeepCache every INTERVAL steps (default 3)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.prompts):
        ap.error(f"PROMPTS: no such file {args.prompts!r}")
    if os.path.lexists(args.out) and not os.path.isdir(args.out):
        ap.error(f"--out {args.out} is a file; batch writes its videos into a folder there")
    return args


def batch(argv, load, prepare):
    """The ``batch`` subcommand; ``load`` and ``prepare`` are the CLI's (``t2vlab.__main__``)."""
    args = parse_batch_args(argv)
    try:
        rank, world = process_share()
        entries, problems = read_prompts(args.prompts)
    except (LaunchError, BadPrompts) as e:  # before any model loads
        print(f"t2vlab batch: {e}", file=sys.stderr)
        return 2

    def report(message):
        print(f"t2vlab batch{f' [process {rank}]' if world > 1 else ''}: {message}", file=sys.stderr)

    try:  # the model, and --lora's adapters on it (before the sampler: a known few-step one brings its own)
        pipe = load(args, args.model)
    except (ValueError, OSError) as e:
        print(f"t2vlab batch: {explain(e) if isinstance(e, OSError) and e.errno is not None else e}", file=sys.stderr)
        return 2
    pipe.set_progress_bar_config(disable=True)
    _, scheduler = prepare(pipe, args)
    if args.deepcache is not None:
        pipe.enable_deepcache(cache_interval=args.deepcache)
    if args.compile is not None:
        pipe.compile(mode=args.compile)
    jobs, refused = check_jobs(make_jobs(entries, args, pipe, scheduler), pipe, args.prompts)
    problems += refused
    if rank == 0:
        for problem in problems:
            report(problem)
    out = Path(args.out)
    try:
        if not out.is_dir() or not any(out.iterdir()):
            atomic.mark_folder(out)  # a folder batch makes (or an empty one) is t2vlab's: its files may be replaced
        atomic.remove_leftovers(out)  # what a killed run left; a concurrent run's files in progress stay
    except OSError as e:
        report(explain(e))
        return 2
    calls = plan(jobs, args.batch_size)
    mine = [call for k, call in enumerate(calls) if k % world == rank]
    skipped = sum(done(out, j) for call in mine for j in call)
    blocked = [j for call in mine for j in call if not done(out, j) and not replaceable(out, j)]
    for j in blocked:
        report(f"line {j.line} ({j.prompt!r:.60}): {out / j.stem}.mp4 or .json exists in a folder t2vlab did not "
               "write, so it is not replaced: delete it to make this video again")
    todo = [[j for j in call if not done(out, j) and j not in blocked] for call in mine]
    todo = [call for call in todo if call]
    failed = [*blocked]
    with tqdm(total=sum(map(len, todo)), desc=f"prompts{f' (process {rank})' if world > 1 else ''}",
              disable=args.quiet, position=rank) as bar:
        for call in todo:
            failed += run_call(pipe, call, out, args.fps, report)
            bar.update(len(call))
    written = sum(map(len, todo)) - len(failed)
    print(f"t2vlab batch{f' [process {rank}/{world}]' if world > 1 else ''}: wrote {written}, skipped {skipped} "
          f"already done, {len(failed)} failed, into {out}")
    return 1 if failed or problems else 0
