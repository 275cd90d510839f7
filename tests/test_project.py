"""Project hygiene: environment.yml names the same packages as pyproject.toml, the package never imports the
reference implementation it is checked against, and CI runs the README's test command and then the same tests'
drift-prone part on the newest torch, failing when either fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    listed = set(re.findall(r"^ {6}- (?!-e )(\S+)$", (ROOT / "environment.yml").read_text(), re.M))
    assert {_name(r) for r in listed} == {_name(r) for r in wanted}
    # and the same version constraints
    assert {r.replace(" ", "").lower() for r in listed} == {r.replace(" ", "").lower() for r in wanted}


def test_package_never_imports_diffusers():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "t2vlab").rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+diffusers", p.read_text(), re.M)]
    assert offenders == []


def _readme_test_command() -> str:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if "pytest" in b).strip()


SECOND_PASS = "# --- the second pass"


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text()
    first, _, _ = ci.partition(SECOND_PASS)
    assert test_command in [line.strip() for line in first.splitlines()]
    assert "pip install torch==2.13.0" in test_command.replace("-q ", "")
    assert " -n 2 --dist loadfile " in test_command  # pytest-xdist: the 2 cores CI has


def test_ci_second_pass_runs_the_same_install_and_pytest_on_the_newest_torch():
    """.ci/run installs the second pass's venv in the background (started before the first pass) with the README's
    install, torch unpinned (the newest that pip resolves), and after the first pass runs the README's pytest
    options unchanged on the notebooks, the parity tests and the trainers' tests there."""
    steps = [step.strip() for step in _readme_test_command().split(" && ")]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.count(SECOND_PASS) == 1
    before, _, second = ci.partition(SECOND_PASS)
    install = next(line for line in before.splitlines() if line.startswith("python3 -m venv .venv-newest "))
    once = "pip install -q --no-compile "  # a venv used once: only what the tests import is compiled
    want = [s.replace(".venv", ".venv-newest").replace("torch==2.13.0", "torch").replace("pip install -q ", once)
            for s in steps[:5]]
    assert install.split(" && ") == want
    assert before.index(install) < before.index(steps[0] + " && ")  # started before the first pass
    assert ") > .ci-newest-install.log 2>&1 &\nnewest_install=$!" in before
    second = second.replace(" \\\n  ", " ")  # continuation lines joined
    assert 'wait "$newest_install" || second=$?' in second
    chain = next(line.strip() for line in second.splitlines() if line.strip().startswith(". .venv-newest/bin/"))
    got = chain.split(" && ")
    assert got[1].startswith("python -c ") and "torch.__version__" in got[1]  # says which torch it ran on
    pytest_call = steps[5]
    options = pytest_call[:pytest_call.index("--nbmake") + len("--nbmake")]
    assert got[2] == f'{options} notebooks "${{newest_tests[@]}}" "${{skip[@]}}" || second=$?', got[2]
    assert "newest_tests=(tests/parity tests/test_finetune.py tests/test_distill.py)" in second


def _run_ci_with_stubs(tmp_path, fail_first=0, fail_second=0, fail_install=0):
    """Run a copy of .ci/run with python3, python, pip and chromium replaced by stubs that log each call (with the
    virtual environment it ran in) and make pytest exit ``fail_first`` in .venv and ``fail_second`` in .venv-newest,
    and the newest venv's first pip ``fail_install``."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    (repo / "tests").mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bin_.mkdir()
    log = tmp_path / "calls.log"
    stubs = {
        "python3": 'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
                   'echo "VIRTUAL_ENV=$3" > "$3/bin/activate"; fi',
        "pip": '[ "$VIRTUAL_ENV" = .venv-newest ] && [ "$4" = torch ] && exit "$FAIL_INSTALL"; exit 0',
        "python": 'case "$*" in "-m pytest "*) '
                  '[ "$VIRTUAL_ENV" = .venv-newest ] && exit "$FAIL_SECOND" || exit "$FAIL_FIRST";; esac',
        "chromium": "",
    }
    for name, body in stubs.items():
        (bin_ / name).write_text(f'#!/bin/bash\necho "$VIRTUAL_ENV $(basename "$0") $*" >> "{log}"\n{body}\n')
        (bin_ / name).chmod(0o755)
    env = {"PATH": f"{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), "VIRTUAL_ENV": "",
           "FAIL_FIRST": str(fail_first), "FAIL_SECOND": str(fail_second), "FAIL_INSTALL": str(fail_install)}
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_fails_when_either_pass_fails_and_always_runs_both(tmp_path):
    done, calls = _run_ci_with_stubs(tmp_path / "ok")
    assert done.returncode == 0, done.stdout + done.stderr
    pytests = [c for c in calls if " python -m pytest " in c]
    assert [c.split()[0] for c in pytests] == [".venv", ".venv-newest"]  # the first pass, then the second
    newest = [c for c in calls if c.startswith(".venv-newest ")]
    first_pip = [c for c in newest if c.split()[1] == "pip"][0]
    assert first_pip == ".venv-newest pip install -q --no-compile torch"  # unpinned: the newest
    assert "--nbmake notebooks tests/parity tests/test_finetune.py tests/test_distill.py --deselect " in pytests[1]
    done, calls = _run_ci_with_stubs(tmp_path / "install", fail_install=7)  # the background install fails
    assert done.returncode == 7 and "FAILED: the second pass" in done.stdout
    assert sum(" python -m pytest " in c for c in calls) == 1  # the first pass ran; the second had no venv

    for first, second in ((1, 0), (0, 1), (2, 3)):
        done, calls = _run_ci_with_stubs(tmp_path / f"fail{first}{second}", first, second)
        assert done.returncode == (first or second), (first, second, done.stdout)
        assert sum(" python -m pytest " in c for c in calls) == 2  # the second pass runs also after a failed first
        said = done.stdout
        assert ("FAILED: the first pass" in said) == bool(first) and ("FAILED: the second pass" in said) == bool(second)


def test_published_configs_match_the_reference_copies():
    import json

    from t2vlab import configs

    ref = ROOT.parent / "shared" / "reference" / "ms-1.7b-configs"
    if not ref.is_dir():
        pytest.skip("../shared/reference not beside this checkout")
    for name, ours in (("unet_config.json", configs.UNET), ("vae_config.json", configs.VAE),
                       ("text_encoder_config.json", configs.TEXT_ENCODER),
                       ("scheduler_config.json", configs.SCHEDULER)):
        theirs = {k: v for k, v in json.loads((ref / name).read_text()).items() if k != "_class_name" or
                  name == "scheduler_config.json"}
        assert ours == theirs, name


def test_an_empty_or_malformed_omp_num_threads_counts_as_unset(monkeypatch):
    """Under xdist each worker and notebook kernel gets one OpenMP thread unless OMP_NUM_THREADS is a count: an
    empty or malformed value, which libgomp ignores (a thread per core), is replaced by 1 (tests/conftest.py)."""
    from tests.conftest import one_thread_unless_set

    for value, want in (("", "1"), (" ", "1"), ("abc", "1"), ("0", "1"), ("-2", "1"), ("3", "3")):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert (one_thread_unless_set(), os.environ["OMP_NUM_THREADS"]) == (want, want), value
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert one_thread_unless_set() == "1"
