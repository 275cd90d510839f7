"""Checks on the notebooks that nbmake runs: every notebook that should draw must draw.

CI runs the notebooks with ``MPLBACKEND=Agg``, and under Agg ipykernel drops every figure: a notebook
that stopped drawing would still pass. Around each nbmake item this hook

* starts the kernel with matplotlib's inline backend (``MPLBACKEND`` as the kernel sees it), so that
  figures become ``image/png`` outputs, and with ``T2VLAB_QUICK=1`` (notebook 10 trains a shorter run);
* runs the notebook with every exercise cell (tagged ``exercise``, its key in the cell's ``exercise``
  metadata) replaced by that exercise's solution (``t2vlab.course.solution_source``), so the checks after
  them prove the solutions right (the committed notebook keeps the learner's stub);
* keeps the notebook nbmake executed (nbmake's ``NotebookRun.execute`` returns it; we wrap that), and
* fails the item when a notebook not listed in ``NO_FIGURES`` has no PNG output.

The notebooks run once: this inspects nbmake's own execution, it does not execute them again.
"""

from __future__ import annotations

import os
import tempfile

import nbformat
import pytest

INLINE = "module://matplotlib_inline.backend_inline"
# notebooks allowed to draw nothing, each with its reason
NO_FIGURES = {
    "09_studio.ipynb": "its pictures are widgets (an ipywidgets Image), not matplotlib figures",
}


def figures(nb) -> int:
    """How many PNG images the executed notebook's cells display."""
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []) if out.get("output_type") in ("display_data", "execute_result"))


def with_solutions(path) -> str | None:
    """A copy of the notebook at ``path`` with its exercise cells filled in by their solutions, written to a
    temporary file beside nothing of the repository; None when it has no exercise."""
    from t2vlab.course import solution_source  # imported here: only notebooks with exercises need it

    nb = nbformat.read(str(path), nbformat.NO_CONVERT)
    cells = [c for c in nb.cells if "exercise" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    for cell in cells:
        cell.source = solution_source(cell.metadata["exercise"])
    fd, name = tempfile.mkstemp(suffix=".ipynb", prefix=f"solved-{os.path.basename(path)[:-6]}-",
                                dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not getattr(item, "nbmake", False):
        return (yield)
    from nbmake import pytest_items  # only with nbmake, which collected this item

    executed = {}
    original = pytest_items.NotebookRun.execute

    def execute(run):
        solved = with_solutions(run.filename)  # in the notebook's own folder: relative paths still work
        if solved is not None:
            run.filename = type(run.filename)(solved)  # nbmake keeps a Path (it reads .parent)
        try:
            executed["result"] = result = original(run)
        finally:
            if solved is not None:
                os.unlink(solved)
        return result

    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", "T2VLAB_QUICK")}
    os.environ["MPLBACKEND"], os.environ["T2VLAB_QUICK"] = INLINE, "1"  # the kernel inherits the environment
    pytest_items.NotebookRun.execute = execute
    try:
        outcome = yield
    finally:
        pytest_items.NotebookRun.execute = original
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    name = os.path.basename(item.filename)
    result = executed.get("result")
    if result is not None and result.error is None and name not in NO_FIGURES and figures(result.nb) == 0:
        raise AssertionError(f"{name} drew no figure: no image/png output in any cell (run under the inline "
                             f"backend). Every notebook must show what it teaches; if this one should not draw, "
                             f"add it to NO_FIGURES in notebooks/conftest.py with the reason.")
    return outcome
