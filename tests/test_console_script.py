"""The ``t2vlab`` command: declared as a console script in pyproject.toml (what ``pip install`` puts on the PATH),
the same ``main`` as ``python -m t2vlab``, with ``--help`` for generating and for each subcommand."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from t2vlab.__main__ import main

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency tomli reads TOML the same way
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_declared_and_points_at_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["t2vlab"].partition(":")
    assert getattr(importlib.import_module(module), name) is main


@pytest.mark.parametrize("argv, words", [
    (["--help"], ["usage: t2vlab", "--free-noise", "t2vlab batch PROMPTS", "t2vlab finetune", "t2vlab convert"]),
    (["batch", "--help"], ["batch", "--out"]),
    (["finetune", "--help"], ["finetune", "--data"]),
    (["convert", "--help"], ["usage: t2vlab convert", "original", "--fp16"]),
])
def test_each_command_prints_its_help(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, (argv, word)


def test_python_m_t2vlab_is_kept():
    done = subprocess.run([sys.executable, "-m", "t2vlab", "convert", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "original" in done.stdout
