"""What the launcher told this process, and a check that N processes really are one job.

``accelerate launch`` and ``torchrun`` give each process ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment; MPI launchers (``mpirun``, which ``accelerate launch --cpu`` uses with a hostfile) give
``PMI_RANK``/``PMI_SIZE`` (MPICH, Intel MPI), ``OMPI_COMM_WORLD_RANK``/``_SIZE`` (Open MPI) or
``MV2_COMM_WORLD_RANK``/``_SIZE`` (MVAPICH). These are the variables accelerate 1.15 reads, in its order: the
first that is set wins (under ``srun`` + ``torchrun`` the MPI ones count Slurm's tasks, torchrun's the processes).

The trainer promises that N processes compute the step one process would with N times the batch (gradients
averaged by accelerate's data-parallel wrapper), and ``batch`` that N processes share the prompts (each video
written once). Both promises break silently when the launcher starts N processes that do not see each other.
``accelerate launch --multi_gpu`` on a machine without a GPU, without the trainer's ``--cpu``, is the common
case: accelerate joins processes only over a GPU backend unless told ``cpu=True`` (then over gloo), so each of
the N processes trains alone on the whole schedule, all write the same LoRA, and the run exits 0. A
``WORLD_SIZE`` without a ``RANK`` would make every ``batch`` process take process 0's share. ``launched`` reads
what the launcher said, and ``check_processes`` stops such a run with an error that says what to do.
"""

from __future__ import annotations

import os

# (rank, size) variable pairs, in accelerate's order: the first whose size is set wins
SHARES = (("RANK", "WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
          ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"))


class LaunchError(RuntimeError):
    """The processes a launcher started would not do the one job they promise (see the module docstring)."""


def _int(name):
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{name}={value!r} in the environment is not an integer") from None


def launched() -> tuple[int, int, str]:
    """(this process's rank, the number of processes, the variables that said so) as the launcher set them;
    (0, 1, "") for a process started on its own. A size above 1 without its rank, or a rank outside [0, size),
    is a ``LaunchError``."""
    for rank_var, size_var in SHARES:
        size = _int(size_var)
        if size is None:
            continue
        rank = _int(rank_var)
        if size > 1 and rank is None:
            raise LaunchError(f"{size_var}={size} in the environment but no {rank_var}: every process would take "
                              f"the share of process 0; start the processes with accelerate launch or torchrun")
        rank = rank or 0
        said = f"{rank_var}={rank}, {size_var}={size}"
        if not 0 <= rank < size:
            raise LaunchError(f"{said} from the environment do not fit together (the rank must be in [0, size))")
        return rank, size, said
    if _int("LOCAL_RANK") is not None:
        raise LaunchError(f"LOCAL_RANK={os.environ['LOCAL_RANK']} in the environment but no WORLD_SIZE: the "
                          "launcher did not say how many processes it started")
    return 0, 1, ""


def check_processes(num_processes, distributed_type):
    """Stop (``LaunchError``) when the launcher started more processes than accelerate joined into one job
    (the Accelerator's ``num_processes`` and ``distributed_type``)."""
    _, size, said = launched()
    kind = str(distributed_type).split(".")[-1]
    if size > 1 and (num_processes != size or kind == "NO"):
        raise LaunchError(
            f"the launcher started {size} processes ({said}), but accelerate joined them into {num_processes} "
            f"process(es) (distributed type {kind}): each would train alone, without the gradient sync, on the "
            "whole schedule, and all would write the same files. On a machine without a GPU pass the trainer's "
            "--cpu as well (accelerate then joins the processes over gloo); or run one process")
