"""Project hygiene: environment.yml names the same packages as pyproject.toml, and the package never
imports the reference implementation it is checked against."""

from __future__ import annotations

import re
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


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in [line.strip() for line in ci_lines]
    assert "pip install torch==2.13.0" in test_command.replace("-q ", "")


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
