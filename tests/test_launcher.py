"""N processes without the sync or the split they promise are stopped (t2vlab.launcher): the trainer's N
processes must be one data-parallel job (accelerate's gradient sync), ``batch``'s must share the prompts.

The launchers are faked by their environment variables (RANK, WORLD_SIZE, LOCAL_RANK as torchrun and
accelerate launch set them; OMPI_COMM_WORLD_*, PMI_* as MPI launchers do): what each process sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2vlab import finetune as ft
from t2vlab.__main__ import main
from t2vlab.launcher import SHARES, LaunchError, launched
from tests.helpers import free_port

pytestmark = pytest.mark.usefixtures("one_thread")

VARIABLES = [v for pair in SHARES for v in pair] + ["LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                                    "ACCELERATE_USE_CPU"]


@pytest.fixture()
def env(monkeypatch):
    """A clean slate of launcher variables; returns a function that sets some."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, str(v))

    return set_


@pytest.mark.parametrize("values, share", [
    ({}, (0, 1)),
    ({"RANK": 1, "WORLD_SIZE": 2, "LOCAL_RANK": 1}, (1, 2)),
    ({"OMPI_COMM_WORLD_RANK": 2, "OMPI_COMM_WORLD_SIZE": 3}, (2, 3)),  # mpirun (Open MPI)
    ({"PMI_RANK": 0, "PMI_SIZE": 2}, (0, 2)),  # MPICH, Intel MPI
    ({"RANK": 1, "WORLD_SIZE": 2, "PMI_RANK": 1, "PMI_SIZE": 2}, (1, 2)),  # accelerate over mpirun sets both
    ({"RANK": 5, "WORLD_SIZE": 8, "PMI_RANK": 0, "PMI_SIZE": 1}, (5, 8)),  # srun -n 1 torchrun: Slurm's 1 task
    ({"PMI_RANK": 1, "PMI_SIZE": 2, "OMPI_COMM_WORLD_RANK": 0, "OMPI_COMM_WORLD_SIZE": 4}, (1, 2)),  # PMI first
])
def test_the_share_is_read_from_any_launcher(env, values, share):
    env(**values)
    assert launched()[:2] == share


@pytest.mark.parametrize("values, words", [
    ({"WORLD_SIZE": 2}, "WORLD_SIZE=2 in the environment but no RANK"),
    ({"LOCAL_RANK": 0}, "LOCAL_RANK=0 in the environment but no WORLD_SIZE"),
    ({"RANK": 2, "WORLD_SIZE": 2}, "do not fit together"),
    ({"RANK": "one", "WORLD_SIZE": 2}, "RANK='one' in the environment is not an integer"),
])
def test_a_launch_that_would_not_split_the_work_is_refused(env, values, words):
    env(**values)
    with pytest.raises(LaunchError, match=words):
        launched()


@pytest.mark.parametrize("values, said", [
    ({"RANK": 1, "WORLD_SIZE": 2}, "RANK=1, WORLD_SIZE=2"),  # torch.distributed.launch: --local-rank as an argument
    ({"OMPI_COMM_WORLD_RANK": 1, "OMPI_COMM_WORLD_SIZE": 2}, "OMPI_COMM_WORLD_RANK=1, OMPI_COMM_WORLD_SIZE=2"),
])
def test_the_trainer_stops_when_the_launchers_processes_are_not_one_job(env, clips, tmp_path, capsys, monkeypatch,
                                                                        values, said):
    """Two processes that accelerate does not join (without LOCAL_RANK, or from mpirun, and without the trainer's
    --cpu: accelerate 1.15 sets up no process group, distributed type NO, one process each): each would train
    alone on the whole schedule and overwrite the other's LoRA, and exit 0. Stopped before the model loads and
    before anything is written."""
    env(**values)
    monkeypatch.setattr(ft, "frozen_pipeline", lambda *a: pytest.fail("the model was loaded first"))
    out = tmp_path / "o"
    assert ft.main(["--data", str(clips), "--out", str(out), "--model", "tiny", "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"the launcher started 2 processes ({said})" in err and "without the gradient sync" in err
    assert "joined them into 1 process(es) (distributed type NO)" in err and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, --multi_gpu does join the processes (NCCL)")
@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_accelerate_launch_multi_gpu_without_a_gpu_and_without_cpu_is_stopped(clips, tmp_path):
    """The real launch, as a user types it on a laptop: ``accelerate launch --multi_gpu --num_processes 2`` without
    the trainer's --cpu. accelerate 1.15 joins processes over gloo only when told cpu=True, so each process trained
    alone ("processes: 1" twice), both wrote the LoRA, and the launch exited 0. Now each process stops, naming what
    it saw and what to pass, before anything is written."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    two = subprocess.run([*launcher, "-m", "t2vlab", "finetune", "--data", str(clips), "--out", str(out), "--model",
                          "tiny", "--frames", "4", "--size", "32", "--steps", "1", "--quiet"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode != 0 and "LoRA written to" not in two.stdout, two.stdout[-2000:]
    for rank in (0, 1):
        assert f"the launcher started 2 processes (RANK={rank}, WORLD_SIZE=2)" in two.stderr, two.stderr[-3000:]
    assert "pass the trainer's --cpu" in two.stderr and not out.exists()


def test_batch_stops_when_the_processes_would_not_share_the_prompts(env, tiny, tmp_path, capsys, monkeypatch):
    """WORLD_SIZE without RANK: every process would take share 0, and the other shares would never be made."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    env(WORLD_SIZE=2)
    monkeypatch.setattr("t2vlab.__main__.load", lambda *a: pytest.fail("the model was loaded first"))
    assert main(["batch", str(prompts), "--out", str(tmp_path / "o")]) == 2
    assert "WORLD_SIZE=2 in the environment but no RANK" in capsys.readouterr().err


def test_batch_under_an_mpi_launcher_takes_its_share(env, tiny, tmp_path, capsys):
    """mpirun -n 2 gives OMPI_COMM_WORLD_RANK/SIZE only: process 1 of 2 makes the second call's video alone
    (each process made every video before)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    env(OMPI_COMM_WORLD_RANK=1, OMPI_COMM_WORLD_SIZE=2)
    out = tmp_path / "o"
    assert main(["batch", str(prompts), "--out", str(out), "--model", str(tiny), "--steps", "1", "--frames", "1",
                 "--batch-size", "1", "--quiet"]) == 0
    assert "[process 1/2]: wrote 1" in capsys.readouterr().out
    (sidecar,) = out.glob("*.json")
    assert '"prompt": "two"' in sidecar.read_text()
