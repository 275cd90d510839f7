"""LoRA on the UNet (t2vlab.lora, t2vlab.lora_files, t2vlab.lora_loading): the formula on linear and convolution
layers, the layers chosen, exact unload, the file formats (ours, a PEFT folder, T2V-Turbo's list, the Hub cache),
loads as transactions, settings read as data, and what fusing means. Parity with peft + diffusers:
tests/parity/test_lora_parity.py.

Tolerance 1e-5 relative (float32): W x + s B A x computed as one or two matmuls (or convolutions) differs by
rounding only; a wrong scale or layer is off by O(1). Whatever is restored (unfuse, unload, a failed load) must be
exactly as before (torch.equal), since the base weights are put back, never recomputed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from t2vlab import TextToVideoPipeline, UNet3DConditionModel, atomic, lora
from t2vlab.lora import (
    LoRAConv2d,
    LoRAConv3d,
    LoRAError,
    LoRALinear,
    adapter_names,
    add_lora,
    list_layers,
    load_lora,
    lora_layers,
    lora_targets,
    remove_lora,
)
from t2vlab.lora_files import METADATA_KEY, read_lora_file
from t2vlab.techniques.consistency import add_guidance_embedding
from t2vlab.weights import TINY_UNET
from tests.helpers import CreatesAFile, fails_half_way, hub_cache, rel_err, turbo_list

pytestmark = pytest.mark.usefixtures("one_thread")

X, T, CTX = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(5)), torch.tensor([500]), \
    torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(6))
# one layer of each kind the UNet has: attention projection, feed-forward, ResNet conv / shortcut / time
# projection, a down- and an up-sampler, a temporal convolution (Conv3d)
KINDS = ["transformer_in.transformer_blocks.0.attn1.to_q", "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
         "down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv_shortcut",
         "down_blocks.0.resnets.0.time_emb_proj", "down_blocks.0.downsamplers.0.conv", "up_blocks.1.upsamplers.0.conv",
         "mid_block.temp_convs.0.conv4.3"]


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNet3DConditionModel.from_config(TINY_UNET).eval()


def out(unet):
    with torch.no_grad():
        return unet(X, T, CTX)


def state(model):
    """Everything a load must leave as it was: the modules themselves and every tensor's value."""
    return [(p, id(m)) for p, m in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model, before):
    modules, tensors = state(model)
    return modules == before[0] and tensors.keys() == before[1].keys() and \
        all(torch.equal(v, before[1][k]) for k, v in tensors.items())


def randomize_adapter(model, name, paths, rank=2, alpha=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in add_lora(model, paths, rank=rank, alpha=alpha, adapter_name=name):
        p.data.copy_(0.3 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------------- the layers
def test_lora_linear_is_w_plus_scaled_b_a_and_starts_as_the_identity():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    x, w = torch.randn(3, 6), base.weight.detach().clone()
    layer = LoRALinear(base)
    assert layer.weight is base.weight and set(dict(layer.named_parameters())) == {"weight", "bias"}
    layer.add_adapter("a", rank=2, alpha=6)
    assert torch.equal(layer(x), base(x))  # B = 0: a fresh adapter changes nothing
    nn.init.normal_(layer.lora_B["a"].weight)
    expected = base(x) + 3.0 * x @ (layer.lora_B["a"].weight @ layer.lora_A["a"].weight).T  # alpha / r = 3
    assert rel_err(layer(x), expected) < 1e-5
    layer.fuse()
    assert rel_err(layer(x), expected) < 1e-5
    layer.unfuse()
    assert torch.equal(base.weight, w) and layer.plain() is base  # the very layer, W bit for bit


@pytest.mark.parametrize("cls, base, x", [
    (LoRAConv2d, nn.Conv2d(3, 5, 3, stride=2, padding=2, dilation=2), torch.randn(2, 3, 9, 9)),
    (LoRAConv3d, nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0)), torch.randn(2, 4, 5, 3, 3)),  # the temporal kind
    (LoRAConv2d, nn.Conv2d(4, 6, 1), torch.randn(1, 4, 3, 3)),  # a 1x1 shortcut
])
def test_lora_conv_is_one_convolution_with_the_layers_geometry(cls, base, x):
    """A (the layer's kernel, stride, padding, dilation) then B (1x1) equals conv(x, W + s (alpha/r) B A): peft's
    form; fused, the same; unfused, W back bit for bit and the very layer back from plain()."""
    torch.manual_seed(0)
    w = base.weight.detach().clone()
    layer = cls(base)
    assert isinstance(layer, type(base)) and layer.weight is base.weight
    layer.add_adapter("a", rank=2, alpha=3)
    assert torch.equal(layer(x), base(x))
    nn.init.normal_(layer.lora_B["a"].weight)
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    assert a.shape == (2, *w.shape[1:]) and b.shape == (w.shape[0], 2, *[1] * (w.ndim - 2))
    delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape) * 1.5  # alpha / r = 3 / 2
    expected = base._conv_forward(x, w + delta, base.bias)
    assert rel_err(layer(x), expected) < 1e-5
    layer.fuse()
    assert rel_err(layer(x), expected) < 1e-5
    layer.unfuse()
    assert torch.equal(base.weight, w) and layer.plain() is base


def test_every_kind_of_unet_layer_takes_an_adapter_and_unloads_exactly(unet):
    before, plain = state(unet), out(unet)
    randomize_adapter(unet, "kinds", KINDS)
    kinds = {type(m) for m in lora_layers(unet).values()}
    assert kinds == {LoRALinear, LoRAConv2d, LoRAConv3d}
    adapted = out(unet)
    assert rel_err(adapted, plain) > 1e-3
    for path in KINDS:  # each layer's adapter acts on its own
        remove_lora(unet, "kinds")
        randomize_adapter(unet, "one", [path])
        assert not torch.equal(out(unet), plain), path
        remove_lora(unet)
    assert same_state(unet, before) and torch.equal(out(unet), plain)


def test_remove_gives_back_the_plain_unet_exactly(unet):
    before, plain = state(unet), out(unet)
    params = add_lora(unet, lora_targets(unet), rank=4)
    with torch.no_grad():
        for p in params:
            p.normal_()
    assert not torch.equal(out(unet), plain)
    remove_lora(unet)
    assert same_state(unet, before) and torch.equal(out(unet), plain)


@pytest.mark.parametrize("rank", [0, 65, -1, 2.5])
def test_rank_zero_or_above_the_width_is_refused_naming_the_layer(unet, rank):
    path = "transformer_in.transformer_blocks.0.attn1.to_q"  # 64 -> 64: rank at most 64
    with pytest.raises(LoRAError, match=r"transformer_in\.transformer_blocks\.0\.attn1\.to_q.*rank"):
        add_lora(unet, [path], rank=rank)


# ------------------------------------------------------------------------------------ which layers
def test_targets_split_spatial_and_temporal(unet):
    spatial, temporal = lora_targets(unet, "spatial"), lora_targets(unet, "temporal")
    both = lora_targets(unet, "both", feed_forward=True)
    assert spatial and temporal and not set(spatial) & set(temporal)
    assert all(".attentions." in p for p in spatial)
    assert all(".temp_attentions." in p or p.startswith("transformer_in.") for p in temporal)
    assert set(both) > set(spatial) | set(temporal) and any(p.endswith("ff.net.2") for p in both)
    with pytest.raises(LoRAError, match="train must be one of"):
        lora_targets(unet, "everything")


def test_list_layers_walks_the_unet_in_t2v_turbos_order(unet):
    """Every Linear/Conv2d/Conv3d once, adapted or not (never an adapter's own A or B), up levels before the mid
    block and cond_proj between the time embedding's two layers (their registration order; diffusers' order is
    compared in the parity tests)."""
    add_guidance_embedding(unet, 16)
    layers = list_layers(unet)
    weight_layers = [p for p, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d))]
    assert sorted(layers) == sorted(weight_layers) and len(set(layers)) == len(layers)
    assert layers[:4] == ["conv_in", "time_embedding.linear_1", "time_embedding.cond_proj", "time_embedding.linear_2"]
    assert layers.index("up_blocks.2.temp_attentions.1.proj_out") < layers.index("mid_block.resnets.0.conv1")
    assert layers[-1] == "conv_out"
    add_lora(unet, KINDS, rank=2)
    assert list_layers(unet) == layers


# --------------------------------------------------------------------------------------- the files
@pytest.fixture
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def write(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


GOOD = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # 32 -> 32


def good_tensors(prefix="unet.", rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"{prefix}{GOOD}.lora_A.weight": torch.randn(rank, 32, generator=g),
            f"{prefix}{GOOD}.lora_B.weight": torch.randn(32, rank, generator=g)}


def test_bad_lora_files_are_refused_naming_the_key(pipe, tmp_path):
    a, b = torch.zeros(2, 32), torch.zeros(32, 2)
    cases = {
        "names no layer": {"unet.down_blocks.9.attn1.to_q.lora_A.weight": a,
                           "unet.down_blocks.9.attn1.to_q.lora_B.weight": b},
        "do not fit layer": {f"unet.{GOOD}.lora_A.weight": torch.zeros(2, 31), f"unet.{GOOD}.lora_B.weight": b},
        "no lora_B partner": {f"unet.{GOOD}.lora_A.weight": a},
        "is not a LoRA weight": {f"unet.{GOOD}.weight": a},
        "another model": {"text_encoder.layers.0.q_proj.lora_A.weight": a},
        "names a GroupNorm": {"unet.conv_norm_out.lora_A.weight": a, "unet.conv_norm_out.lora_B.weight": b},
        r"do not fit layer 'conv_in' \(Conv2d.*expected A \(r, 4, 3, 3\) and B \(32, r, 1, 1\)": {
            "unet.conv_in.lora_A.weight": a, "unet.conv_in.lora_B.weight": b},
    }
    for i, (message, tensors) in enumerate(cases.items()):
        path = write(tmp_path / f"{i}.safetensors", tensors)
        with pytest.raises(LoRAError, match=message) as e:
            pipe.load_lora_weights(path)
        assert str(path) in str(e.value)
        assert not pipe.get_list_adapters()["unet"]  # nothing half-loaded
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(LoRAError, match="not a readable"):
        pipe.load_lora_weights(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        pipe.load_lora_weights(tmp_path / "nothing")


def test_adapters_combine_switch_and_save(pipe, tmp_path):
    """Two adapters add; set_adapters picks; a saved and reloaded adapter gives the same frames."""
    args = dict(prompt="a red circle", num_frames=2, height=32, width=32, num_inference_steps=2)

    def run():
        return pipe(**args, generator=torch.Generator().manual_seed(0)).frames

    plain = run()
    for name, seed in (("a", 1), ("b", 2)):
        g = torch.Generator().manual_seed(seed)
        for p in add_lora(pipe.unet, lora_targets(pipe.unet), rank=2, alpha=4, adapter_name=name):
            p.data.copy_(0.5 * torch.randn(p.shape, generator=g))
    both = run()
    pipe.set_adapters("a")
    only_a = run()
    assert abs(only_a - both).max() > 1e-3 and abs(only_a - plain).max() > 1e-3
    pipe.save_lora_weights(tmp_path, adapter_name="a")
    with pytest.raises(LoRAError, match="name the adapter"):
        pipe.save_lora_weights(tmp_path / "x")
    pipe.unload_lora_weights()
    assert (run() == plain).all()
    pipe.load_lora_weights(tmp_path, adapter_name="again")
    assert abs(run() - only_a).max() < 1e-6
    with pytest.raises(LoRAError, match="already loaded"):
        pipe.load_lora_weights(tmp_path, adapter_name="again")


def test_an_interrupted_save_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / lora.LORA_WEIGHT_NAME
    lora.save_lora_file(path, {"a.lora_A.weight": torch.ones(2, 4)}, {"r": 2})
    old = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", fails_half_way())
    with pytest.raises(OSError, match="injected"):
        lora.save_lora_file(path, {"a.lora_A.weight": torch.zeros(2, 4)}, {"r": 2})
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert not atomic.leftovers(tmp_path)


def peft_folder(folder, unet, rank=2, alpha=6, seed=3):
    """A PEFT adapter folder as ``PeftModel.save_pretrained`` writes one (by hand, no peft): a conv, a temporal
    conv, a time projection and an attention projection, one with its own rank and alpha; returns the deltas."""
    targets = {"down_blocks.1.resnets.0.conv1": 2, "mid_block.temp_convs.0.conv4.3": 2,
               "down_blocks.0.resnets.0.time_emb_proj": 1, GOOD: 2}
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["conv1", "conv4.3",
              "time_emb_proj", "to_q"], "rank_pattern": {"time_emb_proj": 1}, "alpha_pattern": {"resnets.0.conv1": 1},
              "use_rslora": False, "use_dora": False, "bias": "none", "lora_dropout": 0.0, "task_type": None}
    g, tensors, deltas = torch.Generator().manual_seed(seed), {}, {}
    for path, r in targets.items():
        w = unet.get_submodule(path).weight
        a = torch.randn(r, *w.shape[1:], generator=g)
        b = torch.randn(w.shape[0], r, *[1] * (w.ndim - 2), generator=g)
        tensors[f"base_model.model.{path}.lora_A.weight"], tensors[f"base_model.model.{path}.lora_B.weight"] = a, b
        layer_alpha = 1 if path.endswith("resnets.0.conv1") else alpha
        deltas[path] = (b.flatten(1) @ a.flatten(1)).reshape(w.shape) * (layer_alpha / r)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return deltas


def test_a_peft_adapter_folder_loads_with_its_ranks_and_alphas(pipe, tmp_path):
    """The layers adapted are those the file names, each at its rank and alpha (rank_pattern, alpha_pattern):
    the same as the base weights plus the deltas computed by hand."""
    unet = pipe.unet
    deltas = peft_folder(tmp_path / "mcm", unet)
    reference = UNet3DConditionModel.from_config(unet.config).eval()
    reference.load_state_dict(unet.state_dict())
    with torch.no_grad():
        for path, d in deltas.items():
            reference.get_submodule(path).weight += d
    pipe.load_lora_weights(tmp_path / "mcm", adapter_name="mcm")
    assert set(lora_layers(unet)) == set(deltas)
    assert rel_err(out(unet), out(reference)) < 1e-5
    bad = json.loads((tmp_path / "mcm" / "adapter_config.json").read_text())
    bad["target_modules"] = ["to_q", "conv1", "time_emb_proj"]  # the temporal conv is not a target
    (tmp_path / "mcm" / "adapter_config.json").write_text(json.dumps(bad))
    with pytest.raises(LoRAError, match=r"adapter_model\.safetensors: key 'mid_block.temp_convs.0.conv4.3.lora_A"
                                        r".weight': .*not among the adapter's target_modules"):
        pipe.load_lora_weights(tmp_path / "mcm", adapter_name="again")


def test_a_peft_folder_from_the_hub_cache_gives_mcms_recommended_settings(pipe, tmp_path, offline_cache):
    repo = tmp_path / "repo"
    peft_folder(repo / "modelscopet2v-webvid", pipe.unet)
    snapshot = hub_cache(offline_cache, "yhzhai/mcm", repo)
    plain = pipe.recommended
    name = pipe.load_lora_weights("yhzhai/mcm", subfolder="modelscopet2v-webvid")
    rec = pipe.recommended
    assert pipe.lora_sources[name] == ("yhzhai/mcm", "modelscopet2v-webvid")
    assert (rec.scheduler, rec.num_inference_steps, rec.guidance_scale) == ("lcm-mcm", 4, 1.0)
    assert (rec.height, rec.num_frames) == (plain.height, plain.num_frames) and "MCM" in rec.description
    pipe.disable_lora()
    assert pipe.recommended == plain  # an adapter that does not act does not decide
    pipe.enable_lora()
    pipe.unload_lora_weights()
    assert pipe.recommended == plain
    pipe.load_lora_weights(snapshot / "modelscopet2v-webvid" / "adapter_model.safetensors")  # by path: the same
    assert pipe.recommended.scheduler == "lcm-mcm"
    with pytest.raises(FileNotFoundError, match="offline"):
        pipe.load_lora_weights("yhzhai/mcm", subfolder="modelscopet2v-anime")


# ----------------------------------------------------------------------------- T2V-Turbo's list file
@pytest.fixture
def turbo_unet():
    torch.manual_seed(0)
    return add_guidance_embedding(UNet3DConditionModel.from_config(TINY_UNET).eval(), 16)


def test_a_t2v_turbo_list_file_merges_as_their_collapse_lora_does(turbo_unet, tmp_path):
    """W + up.flatten(1) @ down.flatten(1), reshaped (their collapse_lora, scale 1), on every layer; fused the same;
    unloaded, the weights exactly as before."""
    tensors = turbo_list(turbo_unet)
    torch.save(tensors, tmp_path / "unet_lora.pt")
    before, cond = state(turbo_unet), torch.randn(1, 16)
    merged = UNet3DConditionModel.from_config(turbo_unet.config).eval()
    merged.load_state_dict(turbo_unet.state_dict())
    with torch.no_grad():
        for i, path in enumerate(list_layers(merged)):
            w = merged.get_submodule(path).weight
            w += (tensors[2 * i].flatten(1) @ tensors[2 * i + 1].flatten(1)).reshape(w.shape)
    file = read_lora_file(tmp_path / "unet_lora.pt")
    load_lora(turbo_unet, file.tensors, file.config, "turbo", file.source)
    with torch.no_grad():
        expected = merged(X, T, CTX, timestep_cond=cond)
        assert rel_err(turbo_unet(X, T, CTX, timestep_cond=cond), expected) < 1e-5
        lora.fuse_adapters(turbo_unet)
        assert rel_err(turbo_unet(X, T, CTX, timestep_cond=cond), expected) < 1e-5
    remove_lora(turbo_unet)
    assert same_state(turbo_unet, before)


def test_a_list_file_that_does_not_fit_names_the_counts_or_the_layer(turbo_unet, unet, tmp_path):
    tensors = turbo_list(turbo_unet)
    layers = list_layers(turbo_unet)
    with pytest.raises(LoRAError, match=rf"list.pt: {len(layers) - 1} \(up, down\) pairs, but this "
                                        rf"UNet3DConditionModel has {len(layers)} Linear/Conv2d/Conv3d layers"):
        load_lora(turbo_unet, tensors[:-2], source="list.pt")
    with pytest.raises(LoRAError, match="an odd number"):
        load_lora(turbo_unet, tensors[:-1], source="list.pt")
    broken = list(tensors)
    broken[2 * 40] = torch.zeros(3, 3)  # the up of pair 40
    with pytest.raises(LoRAError, match=rf"keys 'item 81 \(down\)'.* and 'item 80 \(up\)' \(3, 3\) do not fit layer "
                                        rf"'{layers[40]}'"):
        load_lora(turbo_unet, broken, source="list.pt")
    assert not adapter_names(turbo_unet)
    # T2V-Turbo's file for a UNet without the guidance embedding: one pair too many, and what to do
    with pytest.raises(LoRAError, match=r"one pair more.*add_guidance_embedding\(pipe.unet, 16\)"):
        load_lora(unet, tensors, source="list.pt")


def test_a_list_file_is_read_without_running_what_it_pickles(turbo_unet, tmp_path):
    marker = tmp_path / "ran"
    tensors = turbo_list(turbo_unet)
    tensors[7] = CreatesAFile(marker)
    torch.save(tensors, tmp_path / "unet_lora.pt")
    with pytest.raises(LoRAError, match=r"unet_lora.pt: key 'item 7' is a .*, not a floating-point tensor"):
        read_lora_file(tmp_path / "unet_lora.pt")
    assert not marker.exists()


def test_loading_t2v_turbo_from_the_hub_cache_gives_its_recommended_settings(tiny, tmp_path, offline_cache):
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    add_guidance_embedding(pipe.unet, 16)
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save(turbo_list(pipe.unet), repo / "unet_lora.pt")
    hub_cache(offline_cache, "jiachenli-ucsb/T2V-Turbo-MS", repo)
    pipe.load_lora_weights("jiachenli-ucsb/T2V-Turbo-MS", weight_name="unet_lora.pt")
    rec = pipe.recommended
    assert (rec.scheduler, rec.num_inference_steps, rec.guidance_scale) == ("lcm-t2v-turbo", 4, 7.5)


# ----------------------------------------------------------------------------- loads are transactions
def malformed(tmp_path):
    """(what, the file or dict, the key its error must name): one bad setting or tensor each."""
    good = good_tensors()
    meta = {METADATA_KEY: json.dumps({"unet.r": 2, "unet.lora_alpha": "eight"})}
    yield "alpha not a number", write(tmp_path / "alpha.safetensors", good, meta), "lora_alpha"
    meta = {METADATA_KEY: json.dumps({"unet.alpha_pattern": {"attn1.to_q": [4]}})}
    yield "an alpha_pattern value that is a list", write(tmp_path / "pattern.safetensors", good, meta), "alpha_pattern"
    meta = {METADATA_KEY: json.dumps([1, 2])}
    yield "metadata that is not an object", write(tmp_path / "list.safetensors", good, meta), "JSON object"
    meta = {METADATA_KEY: "{not json"}
    yield "metadata that is not JSON", write(tmp_path / "json.safetensors", good, meta), "not valid JSON"
    kohya = {**good, f"unet.{GOOD}.alpha": torch.ones(2)}
    yield "a kohya alpha that is not a scalar", write(tmp_path / "kohya.safetensors", kohya), f"{GOOD}.alpha"
    nan = dict(good)
    nan[f"unet.{GOOD}.lora_B.weight"] = torch.full((32, 2), float("nan"))
    yield "a NaN in B", write(tmp_path / "nan.safetensors", nan), f"{GOOD}.lora_B.weight"
    inf = dict(good)
    inf[f"unet.{GOOD}.lora_A.weight"][0, 0] = float("inf")
    yield "an infinity in A", write(tmp_path / "inf.safetensors", inf), f"{GOOD}.lora_A.weight"
    yield "a dict of NumPy arrays", {k: v.numpy() for k, v in good.items()}, f"{GOOD}.lora_A.weight"


def test_a_malformed_lora_is_a_clear_error_and_leaves_the_pipeline_as_it_was(pipe, tmp_path):
    before = state(pipe.unet)
    for what, source, key in malformed(tmp_path):
        with pytest.raises(LoRAError) as e:
            pipe.load_lora_weights(source, adapter_name="x")
        message = str(e.value)
        assert key in message and (str(source) if isinstance(source, Path) else "the LoRA dict") in message, what
        assert not pipe.get_list_adapters()["unet"] and same_state(pipe.unet, before), what
        pipe.unload_lora_weights()  # works: nothing half there
        pipe.load_lora_weights(good_tensors(), adapter_name="x")  # and the name is free again
        pipe.unload_lora_weights()
    assert same_state(pipe.unet, before)


def test_a_load_interrupted_half_way_leaves_the_unet_as_it_was(pipe, tmp_path, monkeypatch):
    """An interrupt (or any error) after some layers took the adapter: they all lose it again, the other adapter
    and its fusion stay, and a retry loads."""
    randomize_adapter(pipe.unet, "kept", KINDS[:3])
    pipe.fuse_lora()
    before, fused_out = state(pipe.unet), out(pipe.unet)
    path = write(tmp_path / "all.safetensors", {f"unet.{k}": v for k, v in lora.lora_state_dict(
        _adapted(pipe.unet.config)).items()})
    calls = []
    real = LoRALinear.add_adapter

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LoRALinear, "add_adapter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipe.load_lora_weights(path, adapter_name="new")
    assert len(calls) == 5 and pipe.get_list_adapters()["unet"] == ["kept"]
    assert same_state(pipe.unet, before) and torch.equal(out(pipe.unet), fused_out)
    monkeypatch.undo()
    pipe.load_lora_weights(path, adapter_name="new")
    assert pipe.get_active_adapters() == ["kept", "new"]


def _adapted(config):
    """A UNet with a random adapter on every attention projection (a file to load)."""
    unet = UNet3DConditionModel.from_config(config)
    randomize_adapter(unet, "default", lora_targets(unet), seed=4)
    return unet


def test_a_crafted_pattern_is_never_run_as_a_regular_expression(tmp_path):
    """peft runs rank_pattern/alpha_pattern keys as regular expressions; one built to backtrack, ((\\w|\\.)*)*Z,
    takes exponentially many steps in a layer path's length (18 characters: 0.2 s; a UNet path has 56: years;
    cc713dc's loader still ran at the 120 s timeout). Here a pattern is a layer name, compared as a string: the
    load is refused at once. Run in a child process so that a hang fails the test instead of stalling the suite."""
    script = textwrap.dedent(f"""
        import torch
        from t2vlab import UNet3DConditionModel
        from t2vlab.lora import LoRAError, load_lora
        from t2vlab.weights import TINY_UNET
        unet = UNet3DConditionModel.from_config(TINY_UNET)
        path = {GOOD!r}
        tensors = {{path + ".lora_A.weight": torch.ones(2, 32), path + ".lora_B.weight": torch.ones(32, 2)}}
        try:
            load_lora(unet, tensors, {{"alpha_pattern": {{r"((\\w|\\.)*)*Z": 1}}}}, source="crafted.safetensors")
        except LoRAError as e:
            print("LoRAError:", e)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert "LoRAError: crafted.safetensors: setting 'alpha_pattern'" in done.stdout, done.stderr
    assert "never runs them as regular expressions" in done.stdout


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=3), max_leaves=12)
NAMES = st.sampled_from(["to_q", "attn1.to_q", GOOD, "conv1", "x", "", "(a+)+$", ".*", "to_q$"]) | st.text(max_size=8)
SETTING = {"r": st.integers(-3, 70) | JSON, "lora_alpha": st.floats() | st.integers(-3, 70) | JSON,
           "rank_pattern": st.dictionaries(NAMES, st.integers(-1, 4) | JSON, max_size=3) | JSON,
           "alpha_pattern": st.dictionaries(NAMES, st.floats() | JSON, max_size=3) | JSON,
           "target_modules": st.lists(NAMES, max_size=3) | JSON, "use_rslora": JSON, "use_dora": JSON,
           "peft_type": st.sampled_from(["LORA", "LOHA"]) | JSON, "bias": JSON, "modules_to_save": JSON}
SETTINGS = st.fixed_dictionaries({}, optional=SETTING) | JSON


@pytest.fixture(scope="module")
def small_unet():
    torch.manual_seed(0)
    return UNet3DConditionModel.from_config(TINY_UNET).eval()


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=SETTINGS)
def test_any_json_as_settings_loads_or_is_a_lora_error_and_never_hangs(small_unet, config):
    """Arbitrary JSON where the settings go: the load completes (then unloads exactly) or raises LoRAError,
    never another exception, never a hang (the deadline), never a half adapter."""
    before = state(small_unet)
    try:
        load_lora(small_unet, {k[5:]: v for k, v in good_tensors().items()}, config, "p", source="f.safetensors")
    except LoRAError:
        assert not adapter_names(small_unet)
    else:
        assert adapter_names(small_unet) == ["p"]
        remove_lora(small_unet)
    assert same_state(small_unet, before)


@settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60) | JSON.map(json.dumps), where=st.sampled_from(["metadata", "adapter_config"]))
def test_any_text_as_a_files_settings_is_read_or_refused_as_a_lora_error(small_unet, tmp_path_factory, text, where):
    folder = tmp_path_factory.mktemp("f")
    tensors = good_tensors()
    if where == "metadata":
        path = write(folder / "x.safetensors", tensors, {METADATA_KEY: text})
    else:
        (folder / "adapter_config.json").write_text(text)
        write(folder / "adapter_model.safetensors", {"base_model.model." + k[5:]: v for k, v in tensors.items()})
        path = folder
    try:
        file = read_lora_file(path)
        load_lora(small_unet, file.tensors, file.config, "p", file.source, file.settings_source)
    except LoRAError as e:
        assert str(path) in str(e)
    else:
        remove_lora(small_unet)
    assert not adapter_names(small_unet)


# ---------------------------------------------------------------------------------------- fusing
def test_fusing_again_replaces_the_fusion_and_the_weights_stay_as_they_were(pipe):
    """fuse_lora(lora_scale=0.5) twice is once (never 0.25), is the adapter at weight 0.5, and unfuse_lora gives
    back the adapter at its own weight (1.0) and, on unload, the weights bit for bit."""
    unet = pipe.unet
    plain_state, plain = state(unet), out(unet)
    randomize_adapter(unet, "a", KINDS)
    unfused = out(unet)
    pipe.fuse_lora(lora_scale=0.5)
    once = out(unet)
    pipe.fuse_lora(lora_scale=0.5)
    assert torch.equal(out(unet), once)
    pipe.unfuse_lora()
    assert lora.adapter_weight(unet, "a") == 1.0 and torch.equal(out(unet), unfused)
    pipe.set_adapters("a", 0.5)
    assert rel_err(out(unet), once) < 1e-5 and rel_err(once, unfused) > 1e-3
    pipe.unload_lora_weights()
    assert same_state(unet, plain_state) and torch.equal(out(unet), plain)


def test_an_adapter_loaded_while_another_is_fused_acts_on_top_of_it(pipe, tmp_path):
    unet = pipe.unet
    files = {}
    for name, seed in (("a", 1), ("b", 2)):
        randomize_adapter(unet, name, KINDS, seed=seed)
        files[name] = pipe.save_lora_weights(tmp_path / name, adapter_name=name)
        pipe.unload_lora_weights()
    plain_state = state(unet)
    pipe.load_lora_weights(files["a"], "a")
    pipe.load_lora_weights(files["b"], "b")
    both = out(unet)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(files["a"], "a")
    pipe.fuse_lora()
    only_a = out(unet)
    pipe.load_lora_weights(files["b"], "b")
    assert pipe.get_active_adapters() == ["a", "b"]
    assert rel_err(out(unet), both) < 1e-5 and rel_err(only_a, both) > 1e-3  # b acts, unfused, on fused a
    pipe.unfuse_lora()
    assert rel_err(out(unet), both) < 1e-5
    pipe.fuse_lora()
    pipe.delete_adapters("a")  # deleting a fused adapter undoes the fusion: b alone, exactly
    b_alone = out(unet)
    pipe.delete_adapters("b")
    assert same_state(unet, plain_state)
    pipe.load_lora_weights(files["b"], "b")
    assert torch.equal(out(unet), b_alone)


def test_disable_and_enable_keep_the_adapters_choice_and_weights(pipe):
    unet = pipe.unet
    plain = out(unet)
    randomize_adapter(unet, "a", KINDS, seed=1)
    randomize_adapter(unet, "b", KINDS, seed=2)
    pipe.set_adapters(["a", "b"], [0.3, 0.7])
    weighted = out(unet)
    pipe.disable_lora()
    assert torch.equal(out(unet), plain)
    pipe.enable_lora()
    assert torch.equal(out(unet), weighted)
    assert [lora.adapter_weight(unet, n) for n in ("a", "b")] == [0.3, 0.7]
    pipe.fuse_lora()
    pipe.disable_lora()  # a fusion is undone: the plain weights exactly
    assert torch.equal(out(unet), plain)
    with pytest.raises(LoRAError, match="disabled"):
        pipe.fuse_lora()
    pipe.enable_lora()
    assert torch.equal(out(unet), weighted)
    randomize_adapter(unet, "c", KINDS[:2], seed=3)  # added while enabled: acts
    assert not torch.equal(out(unet), weighted)
