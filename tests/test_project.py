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
    """The second block of .ci/run is the README's test command in a venv of its own with torch unpinned (the newest
    that pip resolves), its pytest options unchanged, on the parity tests, the trainer's tests and the notebooks."""
    steps = [step.strip() for step in _readme_test_command().split(" && ")]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.count(SECOND_PASS) == 1
    second = ci.partition(SECOND_PASS)[2].replace(" \\\n  ", " ")  # continuation lines joined
    chain = next(line for line in second.splitlines() if line.startswith("python3 -m venv .venv-newest "))
    got = chain.split(" && ")
    once = "pip install -q --no-compile "  # a venv used once: only what the tests import is compiled
    want = [s.replace(".venv", ".venv-newest").replace("torch==2.13.0", "torch").replace("pip install -q ", once)
            for s in steps[:5]]
    assert got[:5] == want
    assert got[5].startswith("python -c ") and "torch.__version__" in got[5]  # says which torch it ran on
    pytest_call = steps[5]
    options = pytest_call[:pytest_call.index("--nbmake") + len("--nbmake")]
    assert got[6] == f'{options} "${{newest_tests[@]}}" notebooks || second=$?', got[6]
    assert "newest_tests=(tests/parity tests/test_finetune.py)" in second
    assert "if [ -f tests/test_distill.py ]; then newest_tests+=(tests/test_distill.py); fi" in second


def _run_ci_with_stubs(tmp_path, fail_first=0, fail_second=0, distill=False):
    """Run a copy of .ci/run with python3, python, pip and chromium replaced by stubs that log each call (with the
    virtual environment it ran in) and make pytest exit ``fail_first`` in .venv and ``fail_second`` in .venv-newest."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    (repo / "tests").mkdir()
    if distill:
        (repo / "tests" / "test_distill.py").write_text("")
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bin_.mkdir()
    log = tmp_path / "calls.log"
    stubs = {
        "python3": 'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
                   'echo "VIRTUAL_ENV=$3" > "$3/bin/activate"; fi',
        "pip": "",
        "python": 'case "$*" in "-m pytest "*) '
                  '[ "$VIRTUAL_ENV" = .venv-newest ] && exit "$FAIL_SECOND" || exit "$FAIL_FIRST";; esac',
        "chromium": "",
    }
    for name, body in stubs.items():
        (bin_ / name).write_text(f'#!/bin/bash\necho "$VIRTUAL_ENV $(basename "$0") $*" >> "{log}"\n{body}\n')
        (bin_ / name).chmod(0o755)
    env = {"PATH": f"{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), "VIRTUAL_ENV": "",
           "FAIL_FIRST": str(fail_first), "FAIL_SECOND": str(fail_second)}
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
    assert "tests/parity tests/test_finetune.py notebooks" in pytests[1] and "test_distill" not in pytests[1]
    _, calls = _run_ci_with_stubs(tmp_path / "distill", distill=True)
    assert "tests/parity tests/test_finetune.py tests/test_distill.py notebooks" in calls[-1]

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
