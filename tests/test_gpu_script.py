"""benchmarks/gpu.py's own arithmetic, on the CPU: the FLOP count behind its "x FLOP floor" column, and the
block it writes into docs/benchmarks.md. (The whole script in --tiny mode, with diffusers beside us, is
tests/parity/test_gpu_script_parity.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.gpu import count_flops, peak_tflops, unet_flops_by_formula, write_docs
from t2vlab import UNet3DConditionModel, atomic
from t2vlab.weights import TINY_UNET

from .helpers import fails_half_way


@pytest.mark.parametrize("frames, context_rows", [(3, 77), (2, 5)])
def test_the_flop_counter_counts_every_matmul_conv_and_attention_of_the_unet(frames, context_rows):
    unet = UNet3DConditionModel.from_config(TINY_UNET).eval()
    x = torch.randn(2, 4, frames, 8, 8)
    ctx = torch.randn(2, context_rows, unet.config.cross_attention_dim)
    counted = count_flops(unet, lambda: unet(x, torch.tensor(500), ctx))
    by_formula = unet_flops_by_formula(unet, x, ctx)
    assert by_formula > 0
    assert counted == by_formula  # exact: both are sums of integer products of the same shapes


def test_the_floor_uses_the_data_sheet_peak_or_the_given_one():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("cpu") is None and peak_tflops("cpu", 2.0) == 2.0


def test_write_docs_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "benchmarks.md"
    res = {"meta": {"argv": ["benchmarks/gpu.py"], "device": "NVIDIA H200", "torch": "2.x"},
           "speed": {"table": {"title": "2. speed", "headers": ["variant", "ms"], "rows": [["t2vlab eager", "9.0"]]}}}
    doc.write_text("# Benchmarks\n\nkept above\n", encoding="utf-8")
    write_docs(res, doc)
    first = doc.read_text()
    assert "kept above" in first and "| t2vlab eager | 9.0 |" in first
    doc.write_text(first + "\nkept below\n", encoding="utf-8")
    res["speed"]["table"]["rows"] = [["t2vlab eager", "7.5"]]
    write_docs(res, doc)
    second = doc.read_text()
    assert "| t2vlab eager | 7.5 |" in second and "9.0" not in second
    assert second.count("benchmarks/gpu.py: begin") == 1 and "kept above" in second and "kept below" in second
    res["finetune"] = {"table": {"title": "4. LoRA step", "headers": ["variant", "peak"], "rows": [["t2vlab", "9"]]}}
    write_docs(res, doc)
    assert "4. LoRA step:" in doc.read_text() and "| t2vlab | 9 |" in doc.read_text()


def test_an_interrupted_write_leaves_the_page_as_it_was(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    res = {"meta": {"argv": ["benchmarks/gpu.py"], "device": "NVIDIA H200", "torch": "2.x"}}
    monkeypatch.setattr(Path, "write_bytes", fails_half_way(0))
    with pytest.raises(OSError, match="injected"):
        write_docs(res, doc)
    assert doc.read_text() == "# Benchmarks\n\nkept\n" and not atomic.leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]
