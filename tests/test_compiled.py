"""The compiled path (t2vlab.compiled): the UNet traces as one graph, and compiled equals eager.

Inductor writes and compiles C++ on the CPU, which takes minutes on a loaded 2-core machine, so the
parity test uses the "aot_eager" backend: the same TorchDynamo trace and AOTAutograd graph inductor
starts from, run by PyTorch's own kernels. What it proves: the traced program is the model (no op
lost, no Python branch frozen wrongly) and it is whole (``fullgraph=True`` makes a break an error).
Inductor's own code generation is measured on a GPU by ``benchmarks/gpu.py`` (fp16, tolerance there).
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from .helpers import tiny_pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=3)


def test_the_unet_traces_as_one_graph_without_breaks(pipe):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 77, pipe.unet.config.cross_attention_dim)
    with torch.no_grad():
        explained = torch._dynamo.explain(pipe.unet)(x, torch.tensor(500), context)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_generation_equals_eager_and_warm_up_pays_the_compile(pipe):
    torch._dynamo.reset()
    graphs = []

    def counting_aot_eager(gm, example_inputs):  # aot_eager, counting the graphs it is handed
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    def generate():
        return pipe("a red circle", num_frames=3, height=64, width=64, num_inference_steps=3,
                    generator=torch.Generator().manual_seed(1), output_type="pt").frames

    eager = generate()
    try:
        pipe.compile(backend=counting_aot_eager)
        assert pipe.compiled["vae"]
        seconds = pipe.warm_up(64, 64, 3)
        assert set(seconds) == {"unet", "vae"} and seconds["unet"] > 0
        assert len(graphs) == 2  # one for the UNet, one for the VAE's decoder: nothing broke them
        compiled = generate()
        assert len(graphs) == 2  # the loop's calls reuse the warm-up's programs: no compile inside the loop
    finally:
        pipe.uncompile()
    # float32: aot_eager runs the same kernels (equal here to the last bit); inductor fuses and reorders
    # sums, which moves float32 results by ~1e-6 relative, so the stated tolerance is 1e-5 relative.
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert pipe.compiled is None and pipe.unet._compiled_call_impl is None


def test_compile_refuses_an_unknown_mode_and_deepcache_together(pipe):
    with pytest.raises(ValueError, match="mode must be one of"):
        pipe.compile(mode="fastest")
    pipe.enable_deepcache(2)
    try:
        with pytest.raises(ValueError, match="DeepCache is on"):
            pipe.compile()
    finally:
        pipe.disable_deepcache()


def test_the_cli_takes_compile_with_an_optional_mode(capsys):
    from t2vlab.__main__ import parse_args

    assert parse_args(["p", "--compile"]).compile == "default"
    assert parse_args(["p", "--compile", "reduce-overhead"]).compile == "reduce-overhead"
    assert parse_args(["p"]).compile is None
    with pytest.raises(SystemExit):
        parse_args(["p", "--compile", "fastest"])
    assert "invalid choice" in capsys.readouterr().err
