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

from t2vlab import TextToVideoPipeline
from t2vlab import finetune as ft
from t2vlab.atomic import leftovers

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

    draws = ft.step_draws

    def crash_at_step_3(step, *a):
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of step 3: state 2 is the last one
        return draws(step, *a)

    monkeypatch.setattr(ft, "step_draws", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2")
    monkeypatch.setattr(ft, "step_draws", draws)
    assert run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2") == 2  # needs --resume
    assert run(clips, tmp_path / "cut", "--steps", "5", "--state-every", "2", "--resume") == 0
    whole, resumed = lora(tmp_path / "whole"), lora(tmp_path / "cut")
    assert set(whole) == set(resumed)
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k


def test_a_crash_while_writing_a_training_state_keeps_the_last_one(clips, tmp_path, monkeypatch):
    save = torch.save

    def fail_second(obj, path, *a, **kw):
        if "state-0000004" in Path(path).parent.name:  # inside the temporary folder of state 4
            raise OSError("disk full")
        return save(obj, path, *a, **kw)

    monkeypatch.setattr(ft.torch, "save", fail_second)
    with pytest.raises(OSError, match="disk full"):
        run(clips, tmp_path / "o", "--steps", "4", "--state-every", "2")
    assert [p.name for p in ft.training_states(tmp_path / "o")] == ["state-0000002"]
    assert not list((tmp_path / "o" / ft.STATES).iterdir())[1:]  # no half-written folder left
    monkeypatch.setattr(ft.torch, "save", save)
    assert run(clips, tmp_path / "o", "--steps", "4", "--state-every", "2", "--resume") == 0


def test_a_crash_while_writing_the_data_cache_leaves_nothing_behind(clips, tmp_path, monkeypatch):
    save = ft.safetensors.torch.save_file

    def half_then_fail(tensors, filename, *a, **kw):
        Path(filename).write_bytes(b"half a cache")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ft.safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        run(clips, tmp_path / "o", "--steps", "1", "--state-every", "0")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == []  # no cache, no temporary file
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
@pytest.mark.parametrize("train, port", [("both", 29517), ("motion", 29518)])  # motion: one DDP forward, two paths
def test_two_processes_under_accelerate_launch_equal_one_with_the_same_global_batch(clips, tmp_path, train, port):
    # SGD: Adam divides each gradient by its own size, which blows float rounding of near-zero gradients up to
    # a whole step; with SGD the LoRA is the gradients summed, and equal gradients give an equal LoRA
    common = ["--data", str(clips), *ARGS, "--steps", "3", "--state-every", "0", "--cpu", "--optimizer", "sgd",
              "--lr", "3", "--train", train]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    # accelerate's own "--cpu --num_processes 2" starts the processes through mpirun, which this machine lacks;
    # "--multi_gpu" starts them as torchrun does, and the trainer's --cpu makes them CPU processes (gloo)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(port)]
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
