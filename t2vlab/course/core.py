"""The machinery of an exercise: run the learner's function, compare it with the package's, say what is wrong.

An exercise is a key ("04.attention": notebook 04, the attention formula), the name of the function the
learner writes, a check and a solution:

- ``check(fn)`` runs ``fn`` on inputs the exercise draws and compares the result with the package's own
  (``compare``). It says *what* is wrong, in this order: nothing returned, the wrong shape, NaN/inf, one of
  the exercise's known mistakes (each the result a typical mistake gives on the same inputs: "without the
  1/sqrt(d) scale"), the sign, a constant factor, and only then where and by how much the numbers differ.
- ``solution`` is a plain function, written the way the learner would write it; ``solution(key)`` prints
  its source, so nothing is in plain view in the notebook (on Colab or GitHub) until the learner asks.

A function that still raises ``NotImplementedError`` (the exercise cell as committed) is "not written yet":
the check says so and returns False, and the notebook goes on with the package's own version. Under CI the
notebooks run with every exercise cell replaced by its solution (``notebooks/conftest.py``), so each check
there proves the solution right.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field

import torch

EXERCISES: dict[str, Exercise] = {}


class ExerciseMistake(AssertionError):
    """The learner's function gives the wrong answer; the message says what is wrong."""


class NotWritten(Exception):
    """The learner's function is the committed stub (it raised NotImplementedError)."""


@dataclass
class Exercise:
    key: str  # "NN.name": the notebook's number and the piece
    title: str  # what the learner builds, in a few words
    name: str  # the name of the function the exercise cell defines
    check: object  # check(fn) -> None, or raises ExerciseMistake
    solution: object  # a function with the exercise's signature
    hint: str = ""  # one line shown with a mistake
    tags: tuple = field(default_factory=tuple)


def register(exercise: Exercise) -> Exercise:
    if exercise.key in EXERCISES:
        raise ValueError(f"exercise {exercise.key!r} is registered twice")
    EXERCISES[exercise.key] = exercise
    return exercise


def exercise(key) -> Exercise:
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; there are: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[key]


def solution_source(key) -> str:
    """The solution's source, named as the exercise cell names the learner's function."""
    ex = exercise(key)
    source = textwrap.dedent(inspect.getsource(ex.solution))
    return source.replace(f"def {ex.solution.__name__}(", f"def {ex.name}(", 1)


def solution(key) -> None:
    """Print one way to write exercise ``key`` (ask only when stuck: the check says what is wrong first)."""
    print(solution_source(key))


def check(key, fn, verbose=True) -> bool:
    """Run exercise ``key``'s check on ``fn``: True when right (said in one line), False when not written yet;
    a wrong answer raises ``ExerciseMistake`` saying what is wrong."""
    ex = exercise(key)
    try:
        ex.check(fn)
    except NotWritten:
        if verbose:
            print(f"{key}: {ex.name} is not written yet (it raises NotImplementedError); the notebook goes on "
                  f"with the package's own. solution({key!r}) shows one way.")
        return False
    except ExerciseMistake as e:
        hint = f"\nhint: {ex.hint}" if ex.hint else ""
        raise ExerciseMistake(f"{key} ({ex.title}): {e}{hint}") from None
    if verbose:
        print(f"{key}: {ex.name} is right.")
    return True


def call(fn, *args, **kwargs):
    """``fn(*args)``, with the committed stub (NotImplementedError) reported as not written."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotWritten from None


# ------------------------------------------------------------------------------------- comparing
def _close(a, b, rtol, atol) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def compare(got, want, what="the result", mistakes=None, rtol=1e-4, atol=1e-5):
    """Raise ExerciseMistake saying how ``got`` differs from ``want`` (see the module docstring), or return.

    ``mistakes``: {message: tensor}, what each typical mistake would have returned on these inputs.
    The tolerances are float32 rounding of the same formula computed in another order."""
    if got is None:
        raise ExerciseMistake(f"{what} is None: the function returns nothing (a missing `return`?)")
    if not torch.is_tensor(got):
        raise ExerciseMistake(f"{what} should be a tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        hint = ""
        if sorted(got.shape) == sorted(want.shape):
            hint = " (the same sizes in another order: a transpose or permute too many or too few?)"
        elif got.numel() == want.numel():
            hint = " (the same number of values: a reshape that groups them differently?)"
        raise ExerciseMistake(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}{hint}")
    got = got.detach().to(want.dtype)
    if not torch.isfinite(got).all():
        raise ExerciseMistake(f"{what} contains NaN or inf (a division by zero, or a sqrt/log of a negative?)")
    if _close(got, want, rtol, atol):
        return
    for message, wrong in (mistakes or {}).items():
        if _close(got, wrong, rtol, atol):
            raise ExerciseMistake(f"{what} is what you get {message}")
    if _close(got, -want, rtol, atol):
        raise ExerciseMistake(f"{what} has the right size but the opposite sign")
    flat_got, flat_want = got.double().flatten(), want.double().flatten()
    if flat_want.norm() > 0:
        factor = (flat_got @ flat_want / (flat_want @ flat_want)).item()
        if abs(factor - 1) > 1e-3 and _close(got, want * factor, rtol, atol):
            raise ExerciseMistake(f"{what} is the expected one times {factor:.4g}: a missing or extra factor "
                                  f"(a scale, a square root, a sum where a mean belongs?)")
    diff = (got.double() - want.double()).abs()
    index = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    raise ExerciseMistake(f"{what} differs from the package's by up to {diff.max().item():.3g} (at index {index}: "
                          f"got {got[index].item():.5g}, expected {want[index].item():.5g})")


def generator(seed=0):
    return torch.Generator().manual_seed(seed)
