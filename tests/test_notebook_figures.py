"""The check in notebooks/conftest.py: a notebook that should draw and draws nothing fails under nbmake,
even with ``MPLBACKEND=Agg`` (CI's setting, under which ipykernel would drop every figure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbmake")
ROOT = Path(__file__).resolve().parents[1]


def notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def test_a_notebook_that_draws_nothing_fails(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "conftest.py", folder / "conftest.py")
    notebook(folder / "draws.ipynb", "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()")
    notebook(folder / "silent.ipynb", "import matplotlib.pyplot as plt\nprint('computed, drew nothing')")
    # the kernel must see the quick switch, and the figure must arrive although the parent says Agg
    notebook(folder / "quick.ipynb", "import os, matplotlib.pyplot as plt\nassert os.environ['T2VLAB_QUICK'] == '1'\n"
                                     "plt.imshow([[0, 1]]); plt.show()")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("T2VLAB_QUICK", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", str(folder)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert "1 failed, 2 passed" in out, out
    assert "FAILED notebooks/silent.ipynb" in out and "silent.ipynb drew no figure" in out, out
