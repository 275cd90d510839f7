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
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--json", str(out), "--docs", str(doc),
                           "--peak-tflops", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) >= {"meta", "parity", "speed", "long_video", "finetune"}
    assert [r["model"] for r in res["parity"]["rows"]] == ["unet", "vae decode (1 frame)", "text encoder"]
    assert all(r["finite"] for r in res["parity"]["rows"])
    variants = {v["variant"]: v for v in res["speed"]["variants"]}
    assert set(variants) == {"diffusers eager", "diffusers compiled", "t2vlab eager", "t2vlab compiled"}
    assert all(len(v["unet_ms_runs"]) == 2 and set(v["end_to_end_s"]) == {"2", "3"} for v in variants.values())
    for name in ("diffusers compiled", "t2vlab compiled"):  # the eager backend in --tiny: the same numbers as eager
        assert variants[name]["first_call"]["rel_err_vs_eager"] < 1e-5
    assert res["speed"]["flops_per_unet_call"] > 0 and variants["t2vlab eager"]["floor_multiple"] > 1
    assert "| t2vlab compiled |" in doc.read_text()
    assert {r["impl"] for r in res["long_video"]} == {"diffusers", "t2vlab"}
    assert set(res["meta"]["elapsed_s"]) >= {"build", "1", "2", "3", "4", "total"}
    steps = {v["variant"]: v["ms_per_step"] for v in res["finetune"]["variants"]}
    assert len(steps) == 4 and "diffusers + peft" in steps and all(ms > 0 for ms in steps.values())
    assert "| t2vlab, checkpointing, frozen weights bf16 |" in doc.read_text()
