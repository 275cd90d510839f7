"""The course's exercises (t2vlab.course): each check passes the solution, catches two typical mistakes of
each exercise saying what is wrong, and treats the committed stub as "not written yet"; the notebooks'
exercise cells are registered, each followed by its check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2vlab import course
from t2vlab.course import EXERCISES, ExerciseMistake, check
from tests.course_mistakes import MISTAKES

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_the_check_passes_the_solution(key, capsys):
    assert check(key, EXERCISES[key].solution) is True
    assert "is right" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_every_exercise_has_two_typical_mistakes_tested(key):
    assert len(MISTAKES.get(key, [])) >= 2, f"add two typical mistakes of {key} to MISTAKES"


@pytest.mark.parametrize("key, wrong, says", [(k, f, s) for k, ms in MISTAKES.items() for f, s in ms],
                         ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_check_says_what_a_typical_mistake_got_wrong(key, wrong, says):
    with pytest.raises(ExerciseMistake, match=says):
        check(key, wrong)


def test_the_stub_is_not_written_yet_and_a_missing_return_is_named(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check("04.attention", stub) is False
    assert "not written yet" in capsys.readouterr().out
    with pytest.raises(ExerciseMistake, match="returns nothing"):
        check("04.attention", lambda q, k, v: None)
    with pytest.raises(ExerciseMistake, match=r"shape \(2, 3, 7, 8\), expected \(2, 3, 5, 8\)"):
        check("04.attention", lambda q, k, v: v)


def test_the_generic_diagnosis_names_sign_and_factor():
    want = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ExerciseMistake, match="opposite sign"):
        course.core.compare(-want, want)
    with pytest.raises(ExerciseMistake, match="times 2"):
        course.core.compare(2 * want, want)
    with pytest.raises(ExerciseMistake, match="differs from the package's by up to"):
        course.core.compare(want + torch.eye(3, 4), want)


def test_solution_prints_the_function_under_the_exercise_cells_name(capsys):
    course.solution("04.attention")
    assert capsys.readouterr().out.startswith("def attention(q, k, v):")


def exercise_cells():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if "exercise" in cell.get("metadata", {}).get("tags", []):
                yield path.name, i, cell, cells


def test_every_exercise_cell_is_registered_a_stub_and_followed_by_its_check():
    for name, i, cell, cells in exercise_cells():
        key = cell["metadata"].get("exercise")
        assert key in EXERCISES, f"{name} cell {i}: exercise key {key!r} is not registered in t2vlab.course"
        source = "".join(cell["source"])
        assert "raise NotImplementedError" in source and "TODO" in source, f"{name} cell {i}: not a stub"
        assert f"def {EXERCISES[key].name}(" in source, f"{name} cell {i}: should define {EXERCISES[key].name}"
        following = next(c for c in cells[i + 1:] if c["cell_type"] == "code")
        assert f'check("{key}"' in "".join(following["source"]), f"{name} cell {i}: the next code cell must check it"
