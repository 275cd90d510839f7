"""benchmarks/gpu.py runs end to end in --tiny mode (any device) and writes every section to JSON, with
diffusers' columns beside ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")  # the script runs diffusers beside t2vlab (it is not imported here)
pytestmark = pytest.mark.parity

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_tiny_writes_every_section(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) >= {"meta", "parity", "speed", "long_video"}
    assert [r["model"] for r in res["parity"]["rows"]] == ["unet", "vae decode (1 frame)", "text encoder"]
    assert all(r["finite"] for r in res["parity"]["rows"])
    assert {r["impl"] for r in res["speed"]["unet_step"]} == {"diffusers", "t2vlab"}
    assert len(res["speed"]["end_to_end"]) == 4
    assert {r["impl"] for r in res["long_video"]} == {"diffusers", "t2vlab"}
    assert set(res["meta"]["elapsed_s"]) >= {"build", "1", "2", "3", "total"}
