"""The fine-tuning trainer (t2vlab.finetune, ``python -m t2vlab finetune``) on the tiny checkpoint: it trains,
an interrupted run resumed from its training states equals an uninterrupted one, a crash while writing a
training state, the data cache or the loss curve leaves the last good file and nothing half-written, bad data
is named, the loss curve leaves a notebook's plotting backend alone, and under ``accelerate launch`` with two
CPU processes it equals a one-process run.

Tolerances: in one process on the CPU every step is the same float32 arithmetic in the same order, so an
interrupted + resumed run must give the uninterrupted LoRA exactly. Two processes average their gradients
(DDP, gloo all-reduce) where one process averages the loss over the whole batch: the same sum grouped
differently, so 1e-5 relative (float32 rounding through a few Adam steps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from t2vlab import TextToVideoPipeline, atomic
from t2vlab import finetune as ft
from t2vlab.atomic import leftovers
from tests.helpers import free_port, interrupt_at_step

ARGS = ["--model", "tiny", "--frames", "4", "--size", "32", "--lora-rank", "4", "--lr", "1e-2", "--quiet"]


def run(data, out, *extra):
    return ft.main(["--data", str(data), "--out", str(out), *ARGS, *extra])


def lora(out, name="pytorch_lora_weights.safetensors"):
    return load_file(str(Path(out) / name))


def test_trains_and_resume_after_an_interruption_equals_the_uninterrupted_run(clips, tmp_path, monkeypatch):
    assert run(clips, tmp_path / "whole", "--steps", "5", "--state-every", "2") == 0
    out = tmp_path / "whole"  # what a run writes: two newest training states, log, curve, a LoRA that learned
    assert [p.name for p in ft.training_states(out)] == ["state-0000004", "state-0000005"]
    assert len((out / "log.jsonl").read_text().splitlines()) == 5 and (out / "loss.png").is_file()
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in lora(out).items())
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    pipe.load_lora_weights(out)
    assert pipe.get_list_adapters()["unet"] == ["default_0"]

    draws = interrupt_at_step(monkeypatch, 3)  # Ctrl-C in the middle of step 3: state 2 is the last one
    with pytest.raises(KeyboardInterrupt):
        run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2")
    monkeypatch.setattr(ft, "step_draws", draws)
    assert run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2") == 2  # needs --resume
    assert len((tmp_path / "cut" / "log.jsonl").read_text().splitlines()) == 3  # steps 1-3; state 2 is the last
    assert run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2", "--resume") == 0
    whole, resumed = lora(tmp_path / "whole"), lora(tmp_path / "cut")
    assert set(whole) == set(resumed)
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    # the log tells the run's history once: step 3, logged before the interruption and again after the resume from
    # state 2, appears once (it appeared twice), and the losses are the uninterrupted run's
    assert (tmp_path / "cut" / "log.jsonl").read_text() == (out / "log.jsonl").read_text()


@pytest.mark.parametrize("which", ["lora-finetune.safetensors", "optimizer.pt"])
def test_a_full_disk_while_writing_a_training_state_says_so_and_keeps_the_last_one(clips, tmp_path, monkeypatch,
                                                                                   capsys, which):
    """The disk fills up while state 4 is written (the kernel's ENOSPC on the write of ``which``): the message
    says so about that file (torch's own writer said "[enforce fail at inline_container.cc:672]"), state 2 stays,
    no half-written folder is left, and --resume continues from state 2."""
    write = Path.write_bytes

    def full_disk(self, data):
        if "state-0000004" in self.parent.name and self.name.startswith(f".{which}"):  # its temporary file
            write(self, data[:len(data) // 2])
            raise OSError(28, "No space left on device")
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert run(clips, tmp_path / "o", "--steps", "4", "--state-every", "2") == 2
    err = capsys.readouterr().err
    assert f"no space left on the disk holding {tmp_path / 'o' / ft.STATES}" in err and "free some space" in err
    assert f"{ft.STATES}/state-0000004/{which}" in err and "enforce fail" not in err
    assert atomic.PARTIAL not in err  # the file's own name, not the temporary one it was written under
    assert [p.name for p in ft.training_states(tmp_path / "o")] == ["state-0000002"]
    assert not list((tmp_path / "o" / ft.STATES).iterdir())[1:]  # no half-written folder left
    monkeypatch.setattr(Path, "write_bytes", write)
    assert run(clips, tmp_path / "o", "--steps", "4", "--state-every", "2", "--resume") == 0


def test_a_crash_while_writing_the_data_cache_leaves_nothing_behind(clips, tmp_path, monkeypatch):
    save = ft.safetensors.torch.save_file

    def half_then_fail(tensors, filename, *a, **kw):
        Path(filename).write_bytes(b"half a cache")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ft.safetensors.torch, "save_file", half_then_fail)
    assert run(clips, tmp_path / "o", "--steps", "1", "--state-every", "0") == 2
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".t2vlab-written"]  # no cache, no temporary file
    monkeypatch.setattr(ft.safetensors.torch, "save_file", save)
    assert run(clips, tmp_path / "o", "--steps", "1", "--state-every", "0") == 0
    assert (tmp_path / "o" / "cache.safetensors").is_file() and not leftovers(tmp_path / "o")


def test_the_loss_curve_leaves_the_plotting_backend_alone_and_is_written_whole(tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    losses = [[1, 0.5], [2, 0.25], [3, 0.2]]
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend: any backend but the one a file needs
    try:
        figures = plt.get_fignums()
        ft.plot_losses(losses, tmp_path / "loss.png")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures  # no pyplot figure left open
    finally:
        matplotlib.use(before)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    old = (tmp_path / "loss.png").read_bytes()
    real = Figure.savefig

    def half_then_fail(self, fname, *a, **kw):
        Path(fname).write_bytes(b"\x89PNG half a picture")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ft.plot_losses(losses + [[4, 0.1]], tmp_path / "loss.png")
    monkeypatch.setattr(Figure, "savefig", real)
    assert (tmp_path / "loss.png").read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def test_the_old_flag_name_still_sets_how_often_a_training_state_is_written(clips, tmp_path):
    args = ft.parse_args(["--data", str(clips), "--out", str(tmp_path), "--checkpoint-every", "3"])
    assert args.state_every == 3


def test_mixed_precision_runs_the_unet_in_bf16(clips, tmp_path):
    """--mixed-precision bf16 (accelerate's autocast; on the CPU too): the same loss to bf16's precision, not
    float32's (8 bits of mantissa: 1e-2 relative), so the autocast really ran."""
    losses = []
    for mp in ("no", "bf16"):
        assert run(clips, tmp_path / mp, "--steps", "1", "--state-every", "0", "--mixed-precision", mp) == 0
        losses.append(json.loads((tmp_path / mp / "log.jsonl").read_text())["loss"])
    assert losses[0] != losses[1] and abs(losses[1] - losses[0]) <= 1e-2 * losses[0]


def test_bad_data_is_named(clips, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", tmp_path / "o1", "--steps", "1") == 2
    assert "no captioned clips" in capsys.readouterr().err

    data = tmp_path / "data"
    shutil.copytree(clips, data)
    (data / "c3.txt").unlink()
    assert run(data, tmp_path / "o2", "--steps", "1") == 2
    assert "c3.gif: no caption" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="skipped .*c3.gif: no caption"):
        assert run(data, tmp_path / "o3", "--steps", "1", "--on-bad-clip", "skip", "--state-every", "0") == 0

    shutil.copy(clips / "c3.txt", data / "c3.txt")
    (data / "c1.gif").write_bytes(b"not a gif")
    assert run(data, tmp_path / "o4", "--steps", "1") == 2
    assert "c1.gif: unreadable clip" in capsys.readouterr().err
    assert run(data, tmp_path / "o5", "--steps", "1", "--frames", "9", "--on-bad-clip", "stop") == 2
    assert "too short: 8 frames" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate command is not installed")
@pytest.mark.parametrize("train", ["both", "motion"])  # motion: one DDP forward, two paths
def test_two_processes_under_accelerate_launch_equal_one_with_the_same_global_batch(clips, tmp_path, train):
    # SGD: Adam divides each gradient by its own size, which blows float rounding of near-zero gradients up to
    # a whole step; with SGD the LoRA is the gradients summed, and equal gradients give an equal LoRA
    common = ["--data", str(clips), *ARGS, "--steps", "3", "--state-every", "0", "--cpu", "--optimizer", "sgd",
              "--lr", "3", "--train", train]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    # accelerate's own "--cpu --num_processes 2" starts the processes through mpirun, which this machine lacks;
    # "--multi_gpu" starts them as torchrun does, and the trainer's --cpu makes them CPU processes (gloo)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]  # never a fixed port: pytest-xdist workers run at once
    assert "--cpu" in common
    two = subprocess.run([*launcher, "-m", "t2vlab", "finetune", *common, "--batch-size", "1",
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert run(clips, tmp_path / "one", *common[len(ARGS) + 2:], "--batch-size", "2") == 0
    for name in ["pytorch_lora_weights.safetensors"] + ([ft.APPEARANCE_WEIGHT_NAME] if train == "motion" else []):
        a, b = lora(tmp_path / "two", name), lora(tmp_path / "one", name)
        assert set(a) == set(b)
        # Relative to the file's largest value, not to each tensor's own: a layer whose true gradient is zero (at
        # 32x32 pixels the mid level is 1x1, where self-attention's softmax over its one key is 1 whatever q and k
        # are, so to_q's and to_k's adapters learn nothing) holds float rounding noise, ~1e-10, which differs
        # with the thread count and grouping; relative to itself that noise is O(1), relative to the LoRA 1e-9.
        scale = max(v.abs().max() for v in b.values())
        assert max((a[k] - b[k]).abs().max() for k in a) <= 1e-5 * scale
        assert max(a[k].abs().max() for k in a if "lora_B" in k) > 1e-3  # the B (zero at first) moved: it trained
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
              for d in ("two", "one")]
    assert np.allclose(*losses, rtol=1e-5, atol=0)
    assert two.stdout.count("LoRA written to") == 1  # written once, by the main process
    assert "processes: 2" in two.stdout  # really two (a one-process run with batch 1 would differ above too)


# ------------------------------------------------------------------------------------- resuming
def test_resuming_with_other_settings_is_refused_naming_both_values_before_the_model_loads(clips, tmp_path,
                                                                                           monkeypatch, capsys):
    assert run(clips, tmp_path / "o", "--steps", "2", "--state-every", "1") == 0
    monkeypatch.setattr(ft, "frozen_pipeline", lambda *a: pytest.fail("the model was loaded first"))
    for flags, words in ((["--lora-rank", "8"], "--lora-rank 4 there, 8 now"),
                         (["--train", "spatial"], "--train both there, spatial now"),
                         (["--lora-alpha", "2"], "--lora-alpha 4.0 there, 2.0 now"),  # not given: the rank, 4
                         (["--optimizer", "sgd"], "--optimizer adamw there, sgd now")):
        assert run(clips, tmp_path / "o", "--steps", "3", "--resume", *flags) == 2
        assert words in capsys.readouterr().err
    monkeypatch.undo()
    assert run(clips, tmp_path / "o", "--steps", "3", "--resume", "--lora-alpha", "4") == 0  # the same scale: resumes


def test_a_training_state_that_does_not_fit_leaves_the_lora_and_the_optimizer_as_they_were(clips, tmp_path):
    """An older state (no settings recorded) of another rank: refused naming the file and the tensor with both
    shapes, after nothing was changed; then a fitting state loads whole."""
    assert run(clips, tmp_path / "o", "--steps", "2", "--state-every", "1") == 0
    state = ft.training_states(tmp_path / "o")[-1]
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    args = ft.parse_args(["--data", str(clips), "--out", str(tmp_path / "p"), *ARGS, "--lora-rank", "8"])
    _, params = ft.add_trained_adapters(pipe.unet, args)
    optimizer = ft.make_optimizer(params, args)
    optimizer.zero_grad()
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()  # an optimizer with state, to see that it is kept
    before = ([p.detach().clone() for p in params], json.dumps(str(optimizer.state_dict())))
    with pytest.raises(ft.DataError, match=r"lora-finetune\.safetensors does not fit .*lora_A\.weight: \(4, \d+\) in "
                                           r"the file, \(8, \d+\) in this run"):
        ft.load_training_state(state, pipe.unet, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before[0], params))
    assert json.dumps(str(optimizer.state_dict())) == before[1]
    pipe4 = TextToVideoPipeline.from_pretrained("tiny")
    args4 = ft.parse_args(["--data", str(clips), "--out", str(tmp_path / "p"), *ARGS])
    _, params4 = ft.add_trained_adapters(pipe4.unet, args4)
    assert ft.load_training_state(state, pipe4.unet, ft.make_optimizer(params4, args4))[0] == 2
    saved = load_file(str(state / "lora-finetune.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in ft.lora_state_dict(pipe4.unet, ft.ADAPTER).items())


# ------------------------------------------------------------------------------------- the output folder
def test_out_naming_a_file_or_a_folder_t2vlab_did_not_write_is_refused_first(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ft, "frozen_pipeline", lambda *a: pytest.fail("the model was loaded first"))
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(SystemExit) as e:
        run(clips, tmp_path / "a-file", "--steps", "1")
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "pytorch_lora_weights.safetensors").write_text("someone else's LoRA")
    assert run(clips, theirs, "--steps", "1") == 2
    assert "t2vlab did not write" in capsys.readouterr().err
    assert (theirs / "pytorch_lora_weights.safetensors").read_text() == "someone else's LoRA"
    for inside in (clips, clips / "out"):
        with pytest.raises(SystemExit):
            run(clips, inside, "--steps", "1")
        assert "the input" in capsys.readouterr().err


def test_a_rerun_removes_only_what_a_killed_run_left(clips, tmp_path):
    out = tmp_path / "o"
    assert run(clips, out, "--steps", "1", "--state-every", "1") == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = out / ft.STATES / f".state-0000009{atomic.PARTIAL}{child.pid}@{atomic._host()}~x"  # kill -9 mid-write
    dead.mkdir()
    (dead / "optimizer.pt").write_bytes(b"half")
    alive = out / f".loss.png{atomic.PARTIAL}{os.getpid()}@{atomic._host()}~y.png"  # a live writer's (this one)
    alive.write_bytes(b"being written")
    (out / "notes.txt").write_text("mine")
    assert run(clips, out, "--steps", "2", "--state-every", "1", "--resume") == 0
    assert not dead.exists() and alive.exists() and (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------- captions and seeds
def test_captions_blank_with_a_bom_or_not_utf8(clips, tmp_path, capsys):
    data = shutil.copytree(clips, tmp_path / "data")
    for txt in data.glob("*.txt"):
        txt.write_text("  \n")
    assert run(data, tmp_path / "o1", "--steps", "1", "--state-every", "0") == 2
    assert "all 4 captions are blank" in capsys.readouterr().err
    assert run(data, tmp_path / "o2", "--steps", "1", "--state-every", "0", "--caption-dropout", "1") == 0
    shutil.copy(clips / "c0.txt", data / "c0.txt")
    with pytest.warns(UserWarning, match="3 of 4 captions are blank"):
        assert run(data, tmp_path / "o3", "--steps", "1", "--state-every", "0") == 0
    (data / "c1.txt").write_bytes("\ufeffa red circle".encode("utf-8"))  # Notepad's UTF-8 starts with a BOM
    assert ft.find_clips(data)[1].caption == "a red circle"
    (data / "c2.txt").write_bytes("un cercle rouge, été".encode("latin-1"))
    assert run(data, tmp_path / "o4", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert f"{data / 'c2.txt'} is not UTF-8 text (byte 0xe9" in err and "Traceback" not in err


def test_any_seed_up_to_2_64_trains_and_beyond_is_refused_naming_the_seed(clips, tmp_path, capsys):
    draws = ft.step_draws(7, 2**64 - 1, 4, 2, (4, 4, 4, 4), 1000, 0.0)  # (seed * 1000003 + step) wraps, never overflows
    assert draws["index"].shape == (2,)
    with pytest.raises(SystemExit):
        run(clips, tmp_path / "o", "--seed", str(2**64))
    assert "argument --seed: must be an integer in [0, 18446744073709551615]" in capsys.readouterr().err
