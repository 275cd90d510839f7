"""Checks on the notebooks that nbmake runs: every cell that draws must show its picture.

CI runs the notebooks with ``MPLBACKEND=Agg``, and under Agg ipykernel drops every figure: a notebook
that stopped drawing would still pass. Around each nbmake item this hook

* starts the kernel with matplotlib's inline backend (``MPLBACKEND`` as the kernel sees it), so that
  figures become ``image/png`` outputs, and with ``T2VLAB_QUICK=1`` (CI's shorter runs: notebooks 10, 16 and 17
  train fewer steps; 11, 12, 14 and 16 sample 10 steps instead of 25; 17 scores fewer captions);
* runs the notebook with every exercise cell (tagged ``exercise``, its key in the cell's ``exercise``
  metadata) replaced by that exercise's solution (``t2vlab.course.solution_source``), so the checks after
  them prove the solutions right (the committed notebook keeps the learner's stub);
* keeps the notebook nbmake executed (nbmake's ``NotebookRun.execute`` returns it; we wrap that), and
* fails the item when a cell that draws has no PNG output, or when a notebook not listed in ``NO_FIGURES``
  draws nothing at all.

What "draws" means (``drawing_cells``), read from the cells' source with ``ast``: a call made by the cell
itself (not inside a function it only defines) to ``plt.show``, to a figure's ``.show()``, to ``display(fig...)``,
to one of ``t2vlab.notebook``'s figure helpers (``DRAWING_HELPERS``), or to a function the notebook defines
whose body makes such a call (``show_rows``, ``strip``, ...). A cell that only builds a figure and closes it
does not draw; a cell whose drawing depends on a branch (``if gpu:``) counts as drawing, so keep such
drawing out of branches, or put the cell's index in ``NOT_DRAWING`` with the reason. This is how a library
call that switches the live notebook's backend (``matplotlib.use("Agg")``, which ``finetune.plot_losses``
once did) is caught: the cells after it still call ``plt.show()``, and their images are missing.

The notebooks run once: this inspects nbmake's own execution, it does not execute them again.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile

import nbformat
import pytest

INLINE = "module://matplotlib_inline.backend_inline"
# notebooks allowed to draw nothing, each with its reason
NO_FIGURES = {
    "09_studio.ipynb": "its pictures are widgets (an ipywidgets Image), not matplotlib figures",
}


# cells that call a drawing function only where nothing is drawn, {notebook: {cell index: reason}}
NOT_DRAWING: dict[str, dict[int, str]] = {}
DRAWING_HELPERS = {"show_images", "show_frames", "video_rows"}  # t2vlab.notebook's: each makes a figure the
# inline backend shows at the end of the cell


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _draws(call: ast.Call, helpers) -> bool:
    """Whether this call shows a figure: plt.show(), fig.show(), display(fig...), or a drawing helper."""
    func, name = call.func, _called_name(call)
    if isinstance(func, ast.Attribute) and name == "show":  # plt.show(), fig.show()
        return True
    if name == "display" and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id.startswith("fig"):
        return True
    return name in helpers


def _own_calls(tree):
    """The calls a cell makes itself: every call outside the bodies of the functions and classes it defines."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _parse(source):
    """The cell's syntax tree; IPython's magics and shell lines (``%``, ``!``) are blanked first."""
    source = re.sub(r"^\s*[%!].*$", "", source, flags=re.M)
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def drawing_cells(nb) -> list[int]:
    """Indices of the code cells that draw (see the module docstring)."""
    trees = {i: _parse(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    helpers, defined = set(DRAWING_HELPERS), {}
    for tree in filter(None, trees.values()):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined[node.name] = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
    grew = True
    while grew:  # a notebook function that calls a drawing function draws, and so on
        grew = False
        for name, calls in defined.items():
            if name not in helpers and any(_draws(c, helpers) for c in calls):
                helpers.add(name)
                grew = True
    return [i for i, tree in trees.items() if tree is not None and any(_draws(c, helpers) for c in _own_calls(tree))]


def images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", [])
               if out.get("output_type") in ("display_data", "execute_result", "update_display_data"))


def missing_figures(nb, name) -> list[int]:
    """The drawing cells of an executed notebook that show no image."""
    allowed = NOT_DRAWING.get(name, {})
    return [i for i in drawing_cells(nb) if i not in allowed and images(nb.cells[i]) == 0]


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


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``) the kernels of two workers share the cores: each kernel gets one OpenMP
    thread (``OMP_NUM_THREADS=1``, which the kernel inherits), unless the caller set it to a count of threads
    (an empty or malformed value counts as unset: libgomp would ignore it and spin a thread per core; see
    tests/conftest.py's ``one_thread_unless_set``)."""
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if hasattr(config, "workerinput") and not (threads.isdigit() and int(threads) > 0):
        os.environ["OMP_NUM_THREADS"] = "1"


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
    if result is None or result.error is not None:
        return outcome
    if name not in NO_FIGURES and figures(result.nb) == 0:
        raise AssertionError(f"{name} drew no figure: no image/png output in any cell (run under the inline "
                             f"backend). Every notebook must show what it teaches; if this one should not draw, "
                             f"add it to NO_FIGURES in notebooks/conftest.py with the reason.")
    missing = missing_figures(result.nb, name)
    if missing:
        raise AssertionError(f"{name}: cell(s) {missing} draw (plt.show(), a figure helper) but show no image: "
                             f"something switched the notebook's plotting backend, or closed the figure before it "
                             f"was shown. (Cell indices count from 0, markdown cells included.)")
    return outcome
