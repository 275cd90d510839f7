"""LoRA files between peft + diffusers and t2vlab, both ways, frame for frame.

The reference: peft's LoRA injected into diffusers' UNet3DConditionModel of a tiny TextToVideoSDPipeline
(random weights), saved with diffusers' ``save_lora_weights`` (diffusers 0.42.1's
``TextToVideoSDPipeline.load_lora_weights`` fails on this UNet, which has no ``load_lora_adapter``, so the
reference side writes and reads the file format itself: peft's ``get_peft_model_state_dict`` /
``set_peft_model_state_dict`` and the metadata ``save_lora_weights`` stores); a PEFT adapter folder made as MCM
makes its adapters (``get_peft_model`` with convolution targets, ``PeftModel.save_pretrained``); and T2V-Turbo's
list file, written as its ``save_lora_weight`` writes one and merged into diffusers' UNet as its
``collapse_lora`` merges it (their code, Ji4chenLi/t2v-turbo utils/lora.py, read for the order and the formula).

Tolerance: 1e-4 absolute on frames in [0, 1] (float32), the pipeline parity tests' bound: the UNets agree to
~1e-6 relative and a few guided steps amplify that ninefold; a wrong alpha / rank / layer moves frames by
> 1e-2 (asserted below: the LoRA visibly changes the video). Unfused and unloaded must give the plain
frames exactly (the base weights are restored bit for bit, not recomputed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import t2vlab
from t2vlab import TextToVideoPipeline, UNet3DConditionModel
from t2vlab.lora import (
    LoRAConv2d,
    LoRAConv3d,
    LoRALinear,
    add_lora,
    list_layers,
    load_lora,
    lora_layers,
    lora_targets,
    read_lora_file,
    remove_lora,
)
from t2vlab.techniques.consistency import guidance_scale_embedding
from t2vlab.weights import TINY_TEXT, TINY_UNET, TINY_VAE
from tests.helpers import randomize_, rel_err

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytestmark = pytest.mark.parity

ATOL = 1e-4
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
ARGS = dict(prompt="a red circle moving left", negative_prompt="blurry", num_frames=3, height=32, width=32,
            num_inference_steps=3, guidance_scale=9.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny published-layout checkpoint with random weights, written by diffusers."""
    from t2vlab.weights import SCHEDULER_CONFIG

    tok = tmp_path_factory.mktemp("tok")
    t2vlab.Tokenizer.default().save_pretrained(tok)
    unet = randomize_(diffusers.UNet3DConditionModel(**TINY_UNET), seed=0, std=0.2)
    vae = randomize_(diffusers.AutoencoderKL(**TINY_VAE), seed=1, std=0.2)
    text = randomize_(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **TINY_TEXT, vocab_size=49408, max_position_embeddings=77)), seed=2, std=0.2)
    pipe = diffusers.TextToVideoSDPipeline(vae=vae, text_encoder=text, unet=unet,
                                           tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tok)),
                                           scheduler=diffusers.DDIMScheduler.from_config(SCHEDULER_CONFIG))
    out = tmp_path_factory.mktemp("ckpt")
    pipe.save_pretrained(out)
    return out


def reference(folder):
    ref = diffusers.TextToVideoSDPipeline.from_pretrained(folder)
    ref.set_progress_bar_config(disable=True)
    return ref


def ours(folder):
    pipe = TextToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames(pipe):
    return pipe(**ARGS, generator=torch.Generator().manual_seed(0)).frames


def peft_config(**kw):
    # rank and alpha differ per layer, so the file's rank_pattern / alpha_pattern must be read right
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False,
                           rank_pattern={"attn2.to_k": 2}, alpha_pattern={"temp_attentions.0.transformer_blocks"
                                                                          ".0.attn1.to_v": 3}, **kw)


@pytest.fixture(scope="module")
def peft_reference(folder, tmp_path_factory):
    """(plain frames, LoRA frames, the folder diffusers' save_lora_weights wrote) from the reference."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    ref = reference(folder)
    plain = frames(ref)
    config = peft_config()
    torch.manual_seed(0)  # peft draws A and B (init_lora_weights=False: B is not zero)
    peft.inject_adapter_in_model(config, ref.unet)
    ref.unet.eval()
    with_lora = frames(ref)
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(ref.unet),
                                                     unet_lora_adapter_metadata=config.to_dict())
    return plain, with_lora, out


def test_a_peft_lora_saved_by_diffusers_loads_and_gives_the_same_frames(folder, peft_reference):
    plain, expected, lora_folder = peft_reference
    assert np.abs(expected - plain).max() > 1e-2  # the LoRA changes the video: the comparison means something
    pipe = ours(folder)
    assert np.abs(frames(pipe) - plain).max() <= ATOL
    name = pipe.load_lora_weights(lora_folder)
    assert name == "default_0" and pipe.get_active_adapters() == ["default_0"]
    assert np.abs(frames(pipe) - expected).max() <= ATOL

    pipe.fuse_lora()  # folded into the weights: the same frames, and the layers run no adapter
    assert all(layer.unfused_weight is not None for layer in lora_layers(pipe.unet).values())
    assert np.abs(frames(pipe) - expected).max() <= ATOL

    before = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "lora" not in k}
    pipe.unfuse_lora()
    pipe.set_lora_scale(0.0)
    np.testing.assert_array_equal(frames(pipe), frames(ours(folder)))  # exactly the plain frames
    pipe.set_lora_scale(1.0)
    assert np.abs(frames(pipe) - expected).max() <= ATOL

    pipe.unload_lora_weights()
    assert not any(isinstance(m, LoRALinear) for m in pipe.unet.modules())
    assert set(pipe.unet.state_dict()) == set(before)
    np.testing.assert_array_equal(frames(pipe), frames(ours(folder)))


def test_the_older_diffusers_key_names_load_too(folder, peft_reference, tmp_path):
    """convert_state_dict_to_diffusers (what diffusers' training scripts call) renames lora_A/B to lora.down/up."""
    from diffusers.utils import convert_state_dict_to_diffusers

    _, expected, lora_folder = peft_reference
    file = read_lora_file(lora_folder)
    tensors, config = file.tensors, file.config
    renamed = convert_state_dict_to_diffusers(tensors)
    assert any(".lora.down.weight" in k for k in renamed)
    pipe = ours(folder)
    # a dict without the metadata: alpha = r (scale 1) as diffusers assumes, so not the reference's frames
    pipe.load_lora_weights({f"unet.{k}": v for k, v in renamed.items()})
    assert np.abs(frames(pipe) - expected).max() > 1e-3
    pipe.unload_lora_weights()
    load_lora(pipe.unet, renamed, config)  # with the file's alphas: the reference's frames
    assert np.abs(frames(pipe) - expected).max() <= ATOL


def test_our_file_loads_into_peft_on_diffusers_with_the_same_frames(folder, tmp_path):
    from peft.utils import set_peft_model_state_dict

    pipe = ours(folder)
    add_lora(pipe.unet, lora_targets(pipe.unet, "both"), rank=4, alpha=8, adapter_name="mine")
    add_lora(pipe.unet, lora_targets(pipe.unet, "temporal")[:2], rank=2, alpha=5, adapter_name="other")
    pipe.delete_adapters("other")  # a second adapter, removed: the saved file holds only "mine"
    layers = lora_layers(pipe.unet)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # trained adapters have B != 0; draw some
        for layer in layers.values():
            for p in (layer.lora_A["mine"].weight, layer.lora_B["mine"].weight):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    expected = frames(pipe)
    path = pipe.save_lora_weights(tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"

    file = read_lora_file(tmp_path)
    tensors, config = file.tensors, file.config
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors) and config["lora_alpha"] == 8
    ref = reference(folder)
    plain = frames(ref)
    peft.inject_adapter_in_model(peft.LoraConfig(**config), ref.unet)
    result = set_peft_model_state_dict(ref.unet, tensors)
    assert not result.unexpected_keys
    ref.unet.eval()
    got = frames(ref)
    assert np.abs(got - plain).max() > 1e-2
    assert np.abs(got - expected).max() <= ATOL


# ------------------------------------------------------------------------ a PEFT folder with conv targets
# MCM's targets (yhZhai/mcm main.py): these suffixes, on every layer whose name ends with one, but for the
# temporal convolutions; the second case adds those too (peft's Conv3d LoRA) and rsLoRA's scale.
MCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
               "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
TEMPORAL_CONVS = ("conv1.2", "conv2.3", "conv3.3", "conv4.3")


@pytest.fixture(scope="module", params=["mcm", "with temporal convs, rslora"])
def peft_folder_reference(folder, tmp_path_factory, request):
    """(plain frames, the frames of peft's adapter on diffusers' UNet, the folder PeftModel.save_pretrained wrote)."""
    temporal = request.param != "mcm"
    ref = reference(folder)
    plain = frames(ref)
    keys = [n for n, m in ref.unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d))
            and (any(n.endswith(t) for t in MCM_TARGETS) and not ("temp" in n and "conv" in n)
                 or temporal and any(n.endswith(t) for t in TEMPORAL_CONVS))]
    assert any("conv_shortcut" in k for k in keys) and any("upsamplers" in k for k in keys)
    # with rsLoRA, alpha 4 gives the same scale as alpha 8 without (4 / sqrt(4) = 8 / 4): frames that move as much
    config = peft.LoraConfig(r=4, lora_alpha=4 if temporal else 8, target_modules=keys, init_lora_weights=False,
                             use_rslora=temporal, rank_pattern={"conv_shortcut": 2}, alpha_pattern={"time_emb_proj": 3})
    torch.manual_seed(0)  # peft draws A and B (init_lora_weights=False: B is not zero)
    model = peft.get_peft_model(ref.unet, config)  # injects into ref.unet itself
    ref.unet.eval()
    with_lora = frames(ref)
    out = tmp_path_factory.mktemp("mcm") / "modelscopet2v-webvid"
    model.save_pretrained(str(out))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    return plain, with_lora, out, temporal


def test_a_peft_adapter_folder_with_conv_targets_gives_peft_s_frames(folder, peft_folder_reference):
    """Loaded from the folder, unfused and fused: peft's frames within ATOL (measured 4e-6 to 7e-6, against
    frames the adapter moves by 0.5)."""
    plain, expected, adapter, temporal = peft_folder_reference
    assert np.abs(expected - plain).max() > 1e-2  # the adapter changes the video: the comparison means something
    pipe = ours(folder)
    pipe.load_lora_weights(adapter)
    kinds = {type(layer) for layer in lora_layers(pipe.unet).values()}
    assert kinds == ({LoRALinear, LoRAConv2d, LoRAConv3d} if temporal else {LoRALinear, LoRAConv2d})
    assert np.abs(frames(pipe) - expected).max() <= ATOL
    pipe.fuse_lora()
    assert np.abs(frames(pipe) - expected).max() <= ATOL
    pipe.unload_lora_weights()
    np.testing.assert_array_equal(frames(pipe), frames(ours(folder)))


# ---------------------------------------------------------------------------------- T2V-Turbo's list
def test_a_t2v_turbo_list_file_equals_its_deltas_merged_into_diffusers_unet(tmp_path):
    """On a tiny UNet with a guidance embedding: the layer order is the one T2V-Turbo pairs its list with
    (their _find_modules_v2 over the UNet: named_modules(), the exact classes nn.Linear, nn.Conv2d and nn.Conv3d,
    never inside an injected layer), and ours with the list loaded, unfused and fused, equals diffusers' UNet
    with each delta up.flatten(1) @ down.flatten(1) added to its weight (their collapse_lora) within 1e-4
    relative (the UNets agree to ~1e-6 on the same weights); unloaded, ours is as it was, exactly."""
    config = dict(TINY_UNET, time_cond_proj_dim=16)
    ref = randomize_(diffusers.UNet3DConditionModel(**config), seed=0, std=0.2).eval()
    ref.save_pretrained(tmp_path / "unet")
    unet = UNet3DConditionModel.from_pretrained(tmp_path / "unet").eval()
    order = [n for n, m in ref.named_modules() if type(m) in (nn.Linear, nn.Conv2d, nn.Conv3d)]
    assert list_layers(unet) == order and "time_embedding.cond_proj" in order

    g, tensors = torch.Generator().manual_seed(1), []
    for name in order:  # as LoraInjected* layers draw shapes (rank 32 clamped to min(in, out)), saved as Parameters
        layer = ref.get_submodule(name)
        fan_in, fan_out = (layer.in_features, layer.out_features) if isinstance(layer, nn.Linear) else \
            (layer.in_channels, layer.out_channels)
        r, w = min(32, fan_in, fan_out), layer.weight
        up = nn.Parameter(0.05 * torch.randn(w.shape[0], r, *[1] * (w.ndim - 2), generator=g))
        down = nn.Parameter(0.05 * torch.randn(r, *w.shape[1:], generator=g))
        tensors += [up.to("cpu").to(torch.float32), down.to("cpu").to(torch.float32)]
    torch.save(tensors, tmp_path / "unet_lora.pt")
    with torch.no_grad():  # collapse_lora (alpha 1.0)
        for i, name in enumerate(order):
            w = ref.get_submodule(name).weight
            w += (tensors[2 * i].flatten(1) @ tensors[2 * i + 1].flatten(1)).reshape(w.shape).to(w.dtype)

    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 7, 32, generator=g)
    t, cond = torch.tensor([999, 259]), guidance_scale_embedding(torch.tensor([7.5, 7.5]), 16)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with torch.no_grad():
        plain = unet(x, t, ctx, timestep_cond=cond)
        expected = ref(x, t, ctx, timestep_cond=cond).sample
        file = read_lora_file(tmp_path / "unet_lora.pt")
        load_lora(unet, file.tensors, file.config, "turbo", file.source)
        assert rel_err(expected, plain) > 1e-2
        assert rel_err(unet(x, t, ctx, timestep_cond=cond), expected) < 1e-4
        t2vlab.lora.fuse_adapters(unet)
        assert rel_err(unet(x, t, ctx, timestep_cond=cond), expected) < 1e-4
    remove_lora(unet)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
