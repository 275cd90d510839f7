"""The course's exercises: the learner writes a piece, a check says what is wrong, a solution on request.

In a notebook::

    from t2vlab.course import check, solution

    def attention(q, k, v):          # the exercise cell (tagged "exercise" in its metadata)
        # TODO: softmax(q k^T / sqrt(d)) v
        raise NotImplementedError

    check("04.attention", attention)  # right, wrong (and what is wrong), or not written yet
    solution("04.attention")          # prints one way to write it, when stuck

Each notebook's exercises live in one module here (``ex04_attention.py`` for notebook 04), each exercise
registered with its key, check and solution (``core.Exercise``); ``core`` holds the shared machinery.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each module registers its notebook's exercises), in notebook order
    ex00_toy,
    ex01_text,
    ex02_samplers,
    ex03_vae,
    ex04_attention,
    ex05_unet,
    ex06_pipeline,
    ex08_noise,
    ex10_training,
    ex11_sdedit,
    ex12_free_noise,
    ex14_lora,
    ex15_speed,
    ex16_capstone,
    ex17_few_steps,
    ex18_directing,
)
from .core import EXERCISES, Exercise, ExerciseMistake, check, exercise, solution, solution_source

__all__ = ["EXERCISES", "Exercise", "ExerciseMistake", "check", "exercise", "solution", "solution_source"]
