"""The check in notebooks/conftest.py: under nbmake every cell that draws must show an image, even with
``MPLBACKEND=Agg`` (CI's setting, under which ipykernel would drop every figure), and a notebook that should
draw and draws nothing fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.helpers import load_file_module

pytest.importorskip("nbmake")
ROOT = Path(__file__).resolve().parents[1]


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return nb


def load_conftest():
    return load_file_module(ROOT / "notebooks" / "conftest.py", "notebooks_conftest")


def test_which_cells_draw(tmp_path):
    conftest = load_conftest()
    nb = notebook(tmp_path / "n.ipynb",
                  "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",            # 0: draws
                  "def show_rows(rows):\n    fig = plt.figure()\n    plt.show()\n",          # 1: only defines
                  "def strip(v):\n    return show_rows([v])",                                # 2: only defines
                  "%matplotlib inline\nfor v in range(2):\n    strip(v)",                     # 3: through two helpers
                  "fig = plt.figure()\nplt.close(fig)\nprint('no picture')",                 # 4: closes, shows nothing
                  "from t2vlab.notebook import video_rows\nfig = video_rows([], [])",        # 5: a package helper
                  "from IPython.display import display\ndisplay(fig)",                       # 6: displays a figure
                  "probe = lambda p: plt.show()\nprint(1)",                                   # 7: only defines
                  "fig.show()")                                                              # 8: a figure's show
    assert conftest.drawing_cells(nb) == [0, 3, 5, 6, 8]


def test_a_notebook_that_draws_nothing_or_loses_a_figure_fails(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "conftest.py", folder / "conftest.py")
    notebook(folder / "draws.ipynb", "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",
             "def show_it():\n    plt.plot([2, 1]); plt.show()", "show_it()")
    notebook(folder / "silent.ipynb", "import matplotlib.pyplot as plt\nprint('computed, drew nothing')")
    # the kernel must see the quick switch, and the figure must arrive although the parent says Agg
    notebook(folder / "quick.ipynb", "import os, matplotlib.pyplot as plt\nassert os.environ['T2VLAB_QUICK'] == '1'\n"
                                     "plt.imshow([[0, 1]]); plt.show()")
    # a library call that switches the live notebook's backend: the cells after it lose their pictures
    notebook(folder / "switched.ipynb", "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",
             "def show_it():\n    plt.plot([2, 1]); plt.show()", "import matplotlib\nmatplotlib.use('Agg')",
             "show_it()")
    # an exercise cell (a stub) is filled with its solution, so the check after it passes
    exercise = nbformat.v4.new_code_cell("def attention(q, k, v):\n    # TODO\n    raise NotImplementedError",
                                         metadata={"tags": ["exercise"], "exercise": "04.attention"})
    nb = notebook(folder / "exercise.ipynb", "from t2vlab.course import check\nimport matplotlib.pyplot as plt")
    checked = nbformat.v4.new_code_cell('assert check("04.attention", attention)\nplt.plot([1]); plt.show()')
    nb.cells += [exercise, checked]
    nbformat.write(nb, folder / "exercise.ipynb")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    env.pop("T2VLAB_QUICK", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", str(folder)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert "2 failed, 3 passed" in out, out
    assert not list(folder.glob("solved-*")), "the filled-in copy is removed"
    assert "FAILED notebooks/silent.ipynb" in out and "silent.ipynb drew no figure" in out, out
    assert "FAILED notebooks/switched.ipynb" in out and "switched.ipynb: cell(s) [3] draw" in out, out
