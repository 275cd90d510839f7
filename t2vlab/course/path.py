"""The course's learning path: which notebooks form the core sequence, which are optional tooling, what each one
needs first, how long it takes, and what its exercises build. Notebook 00 prints it (``show_learning_path()``),
and the README's course table gives the same figures.

cpu_minutes: measured, the wall time of the notebook under nbmake (``python -m pytest --nbmake``, the exercises
filled with their solutions, as CI runs it) on the project's 2-core CPU machine, one notebook at a time, rounded to
half a minute (2026-12-01: 20 s for 00, 14 s for 01, 30 s for 02, 12 s for 03, 14 s for 04, 13 s for 05, 42 s for
06, 71 s for 07, 22 s for 08, 22 s for 09, 90 s for 10, 109 s for 11, 119 s for 12, 14 s for 13, 78 s for 14, 39 s
for 15; 12 minutes in all). 18 was measured later (2026-12-01) on the same machine while other jobs ran: 114 s
of wall time (73 s of CPU time; 187 s under a load of about 6); 17 too: 190 s of wall time (186 s of CPU time)
beside another job's installs, most of it the judge's 48-caption runs; 16 too: 136 s of wall time (118 s of CPU
time) under a load of about 4, on torch 2.13 and 2.14 alike (about 19 minutes for all 19). Writing the
exercises takes the learner longer.
t4_minutes_estimate: an estimate, not a measurement (no T4 was at hand): on a GPU the notebooks load the real 1.7
B-parameter model, so the first one pays its download (3.6 GB) and each one its load (about a minute) besides
generating. None where not yet measured or estimated. For 07-18 (estimated 2026-12-01) the basis is what each does
on a GPU outside CI, where T2VLAB_QUICK is unset: 07, 08 and 09 load the real model (a minute) and generate with it
(07 also 64 frames with offloading, 2 steps); 10, 16 and 17 run their full training (10: 300 steps; 16: 400 steps,
about 8 CPU minutes on one thread; 17: 150 distillation steps and the judge on all 48 captions, then the real model
with the published adapters); 11, 12, 13, 14, 15 and 18 stay on the toy or the tiny checkpoint (14 loads the shipped
LoRAs and trains a few steps, as under CI), which a GPU runs about as fast as the CPU's one thread (launch-bound
tensors: 8 frames of 64x64), so their CPU minutes stand, plus a Colab session's install; 15 also compiles with
inductor there (about a minute). A T4 run should replace these figures when one is at hand.
"""

from __future__ import annotations

from pathlib import Path

LEARNING_PATH = {
    "00": dict(title="Quickstart, and the toy world and its judge", kind="core", prerequisites=[],
               cpu_minutes=0.5, t4_minutes_estimate=6,
               builds="the judge's mask of the shape's pixels, and the path of its centroid"),
    "01": dict(title="Text: from a prompt to what the UNet reads", kind="core", prerequisites=["00"],
               cpu_minutes=0.5, t4_minutes_estimate=3,
               builds="a prompt framed to 77 ids (start, text, end, padding), causal self-attention"),
    "02": dict(title="Noise, schedules and samplers", kind="core", prerequisites=["00"],
               cpu_minutes=0.5, t4_minutes_estimate=4,
               builds="the DDPM posterior q(x_t' | x_t, x0), the DDIM step"),
    "03": dict(title="The VAE: pixels to latents and back", kind="core", prerequisites=["02"],
               cpu_minutes=0.5, t4_minutes_estimate=3,
               builds="the VAE's KL term, the reparameterised sample"),
    "04": dict(title="Attention: self, cross and temporal", kind="core", prerequisites=["01"],
               cpu_minutes=0.5, t4_minutes_estimate=3,
               builds="attention from its formula, the multi-head layer around it"),
    "05": dict(title="The 3D UNet", kind="core", prerequisites=["02", "04"],
               cpu_minutes=0.5, t4_minutes_estimate=3,
               builds="frames folded into the batch, the sinusoidal timestep embedding, one level's forward"),
    "06": dict(title="The pipeline: the denoising loop by hand", kind="core", prerequisites=["01", "02", "03", "05"],
               cpu_minutes=0.5, t4_minutes_estimate=5,
               builds="the guidance rule, the guided denoising loop from the pipeline's parts"),
    "07": dict(title="Memory: what each option saves, and what it costs", kind="optional", prerequisites=["03", "06"],
               cpu_minutes=1, t4_minutes_estimate=4,
               builds=None),
    "08": dict(title="VideoFusion's decomposed noise", kind="core", prerequisites=["06"],
               cpu_minutes=0.5, t4_minutes_estimate=4,
               builds="the shared + residual noise of VideoFusion, the correlation between frames"),
    "09": dict(title="The studio: generate, then look inside", kind="optional", prerequisites=["04", "06"],
               cpu_minutes=0.5, t4_minutes_estimate=4, builds=None),
    "10": dict(title="Train your own text-to-video model", kind="core", prerequisites=["03", "06"],
               cpu_minutes=1.5, t4_minutes_estimate=3,
               builds="caption dropout, the noise-prediction loss"),
    "11": dict(title="Video-to-video and image-to-video", kind="core", prerequisites=["02", "06"],
               cpu_minutes=2, t4_minutes_estimate=2,
               builds="SDEdit's starting timesteps, the video noised to the start"),
    "12": dict(title="Long videos: FreeNoise, prompt travel, FreeInit and FreeU", kind="core",
               prerequisites=["04", "06", "08"], cpu_minutes=2, t4_minutes_estimate=2,
               builds="FreeNoise's windows, their pyramid weights, the windows fused (Eq. 4)"),
    "13": dict(title="Checkpoints: one model, two layouts, a family of fine-tunes", kind="optional",
               prerequisites=["05"], cpu_minutes=0.5, t4_minutes_estimate=1, builds=None),
    "14": dict(title="Fine-tuning with LoRA: teach the toy model a new colour", kind="core", prerequisites=["10"],
               cpu_minutes=1.5, t4_minutes_estimate=2,
               builds="LoRALinear's forward, the LoRA folded into the weight"),
    "15": dict(title="Speed: the compiled path, DeepCache, and a batch of prompts", kind="optional",
               prerequisites=["05", "06"], cpu_minutes=0.5, t4_minutes_estimate=3, builds=None),
    # the capstone: everything again on a new attribute, with 14's LoRA recipe and 00's judge
    "16": dict(title="Capstone: a new attribute (speed) taught to the model", kind="core",
               prerequisites=["00", "03", "14"], cpu_minutes=2.5, t4_minutes_estimate=4,
               builds="slow shapes for the toy world, the judge's speed reader (the travel along the motion)"),
    "17": dict(title="Few steps: consistency models, and distilling the toy model yourself", kind="core",
               prerequisites=["02", "06", "14"], cpu_minutes=3, t4_minutes_estimate=5,
               builds="the boundary scalings c_skip and c_out, the consistency function, the teacher's guided DDIM "
                      "step (the distillation's ODE solver)"),
    # directing builds on 11's first-frame anchor
    "18": dict(title="Directing a video: keyframes, continuation, loops, in-between frames", kind="core",
               prerequisites=["06", "11", "12"], cpu_minutes=1.5, t4_minutes_estimate=2,
               builds="the keyframe hook (held frames noised to each step's level), the circular temporal "
                      "convolution of a loop"),
}


def _minutes(value) -> str:
    return "-" if value is None else f"{value:g}"


def learning_path_table() -> str:
    """The learning path as a plain-text table, core sequence first, then the optional notebooks."""
    rows = [("nb", "kind", "needs", "CPU min", "T4 min (est.)", "title / what its exercises build")]
    for kind in ("core", "optional"):
        for number, entry in LEARNING_PATH.items():
            if entry["kind"] != kind:
                continue
            rows.append((number, kind, ", ".join(entry["prerequisites"]) or "-", _minutes(entry["cpu_minutes"]),
                         _minutes(entry["t4_minutes_estimate"]), entry["title"]))
            if entry["builds"]:
                rows.append(("", "", "", "", "", f"  builds: {entry['builds']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


def show_learning_path() -> None:
    """Print the learning path (notebook 00 does), with the totals of the core sequence."""
    print(learning_path_table())
    core = [e for e in LEARNING_PATH.values() if e["kind"] == "core"]
    cpu = [e["cpu_minutes"] for e in core]
    if all(m is not None for m in cpu):
        print(f"\ncore sequence: {len(core)} notebooks, about {sum(cpu):.0f} CPU minutes in all")


def about(number) -> None:
    """One notebook's place on the path (its first cell prints it): core or optional, what to read first, time."""
    entry = LEARNING_PATH[str(number)]
    needs = ", ".join(entry["prerequisites"]) or "nothing (Python and PyTorch tensors)"
    cpu, t4 = entry["cpu_minutes"], entry["t4_minutes_estimate"]
    cpu = "not measured yet" if cpu is None else f"about {cpu:g} min to run on a 2-core CPU (measured)"
    t4 = "" if t4 is None else f", about {t4:g} min on a T4 GPU (an estimate)"
    print(f"notebook {number} ({entry['kind']}): read first: {needs}; {cpu}{t4}")


# Where the notebooks' Colab badges point. Nothing in this project has confirmed that this repository address exists
# (it is the one the project's first notebooks used); it is written here once, with t2vlab.notebook.INSTALL_SOURCE.
REPOSITORY = "t2vlab/t2vlab"
COLAB = "https://colab.research.google.com/github/{repository}/blob/main/notebooks/{notebook}"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def notebook_file(number, folder) -> str:
    """The file name of notebook ``number`` in ``folder`` ("07" -> "07_memory.ipynb")."""
    names = sorted(p.name for p in Path(folder).glob(f"{number}_*.ipynb"))
    if len(names) != 1:
        raise ValueError(f"notebook {number}: expected one file {number}_*.ipynb in {folder}, found {names}")
    return names[0]


def readme_rows(folder) -> list[str]:
    """The README's course table, one markdown row per notebook, core sequence first (tests hold the README to it)."""
    rows = ["| notebook | kind | needs first | CPU minutes (measured) | T4 minutes (estimate) | what you build | |",
            "|---|---|---|---|---|---|---|"]
    for kind in ("core", "optional"):
        for number, entry in LEARNING_PATH.items():
            if entry["kind"] != kind:
                continue
            name = notebook_file(number, folder)
            badge = f"[![Open In Colab]({BADGE})]({COLAB.format(repository=REPOSITORY, notebook=name)})"
            what = f"{entry['title']}{': ' + entry['builds'] if entry['builds'] else ''}".replace("|", "\\|")
            rows.append(f"| `{name[:-6]}` | {kind} | {', '.join(entry['prerequisites']) or '-'} | "
                        f"{_minutes(entry['cpu_minutes'])} | {_minutes(entry['t4_minutes_estimate'])} | "
                        f"{what} | {badge} |")
    return rows
