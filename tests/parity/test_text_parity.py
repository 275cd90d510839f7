"""Tokenizer and CLIP text encoder against transformers: its CLIPTokenizer reading our published folder,
and its CLIPTextModel (the oracle) on the same random weights, through the files each side writes.

Parity tolerance: relative error max|ours - ref| / max|ref| < 1e-5 in float32. Both sides do the
same float32 arithmetic in a different order (fused SDPA vs. explicit softmax, another mask
constant); a tiny 3-layer model leaves rounding near 1e-7, while any real mistake (mask, activation,
norm order, skipped layer) moves the output by 1e-2 or more.
"""

import json

import pytest
import torch

from t2vlab import configs
from t2vlab.text_encoder import CLIPTextEncoder
from t2vlab.tokenizer import Tokenizer
from tests.helpers import CAT_IDS, rel_err
from tests.helpers import TEXT_TINY as TINY
from tests.helpers import text_inputs as inputs

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity

FULL_CONFIG = configs.TEXT_ENCODER  # the published text_encoder/config.json


# ----------------------------------------------------------------------------------------- tokenizer
def test_published_folder_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tokenizer")
    assert {p.name for p in (tmp_path / "tokenizer").iterdir()} == {
        "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"}
    ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    assert ref.pad_token == "!" and ref.model_max_length == 77
    assert ref("a photo of a cat")["input_ids"] == CAT_IDS
    ours = Tokenizer.from_pretrained(tmp_path)  # subfolder="tokenizer"
    prompts = ["a photo of a cat", "", "café 猫 🐱 naïve", "An ASTRONAUT riding a horse, 4k!!"]
    assert torch.equal(ours(prompts).input_ids, tok(prompts).input_ids)


# -------------------------------------------------------------------------------------- text encoder
def oracle(hidden_act, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(hidden_act=hidden_act, attn_implementation="eager", **TINY)
    model = transformers.CLIPTextModel(cfg).eval()
    with torch.no_grad():  # perturb everything (LayerNorms start at 1/0) so every parameter matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def ours_from(model):
    ours = CLIPTextEncoder.from_config(model.config.to_dict())
    ours.load_state_dict(CLIPTextEncoder.convert_state_dict(model.state_dict()), strict=True)
    return ours.eval()


@pytest.mark.parametrize("hidden_act", ["gelu", "quick_gelu"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("clip_skip", [None, 1, 2])
def test_matches_transformers(hidden_act, padded, clip_skip):
    ref_model = oracle(hidden_act)
    ours = ours_from(ref_model)
    ids, mask = inputs()
    mask = mask if padded else None
    with torch.no_grad():
        out = ref_model(ids, attention_mask=mask, output_hidden_states=True)
        # what diffusers' encode_prompt does with clip_skip
        ref = out.last_hidden_state if clip_skip is None else \
            ref_model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])
        got = ours(ids, attention_mask=mask, clip_skip=clip_skip)
    assert got.shape == (3, 77, 32)
    assert rel_err(got, ref) < 1e-5
    if padded:  # the mask must matter, or this test would not test it
        assert rel_err(ours(ids, clip_skip=clip_skip), ref) > 1e-3


def load_both_ways_and_compare(ours, ref_model):
    ids, _ = inputs()
    with torch.no_grad():
        assert rel_err(ours(ids), ref_model(ids).last_hidden_state) < 1e-5


def test_loads_transformers_files(tmp_path):
    ref_model = oracle("quick_gelu")
    ref_model.save_pretrained(tmp_path / "v5")  # transformers 5: model.safetensors, no text_model. prefix
    load_both_ways_and_compare(CLIPTextEncoder.from_pretrained(tmp_path, subfolder="v5"), ref_model)
    # published layout (transformers 4): text_model. prefix, pytorch_model.bin with the position_ids buffer
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text((tmp_path / "v5" / "config.json").read_text())
    state = {"text_model." + k: v for k, v in ref_model.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(state, tmp_path / "old" / "pytorch_model.bin")
    load_both_ways_and_compare(CLIPTextEncoder.from_pretrained(tmp_path / "old"), ref_model)
    # fp16 variant
    ref_model.half().save_pretrained(tmp_path / "fp16", variant="fp16")
    half = CLIPTextEncoder.from_pretrained(tmp_path / "fp16", variant="fp16", torch_dtype=torch.float16)
    assert half.dtype == torch.float16
    for k, v in ref_model.state_dict().items():
        assert torch.equal(half.state_dict()["text_model." + k], v)


def test_save_pretrained_is_readable_by_transformers(tmp_path):
    ours = ours_from(oracle("gelu"))
    target = ours.save_pretrained(tmp_path / "text_encoder")
    assert target.name == "model.safetensors"
    config = json.loads((tmp_path / "text_encoder" / "config.json").read_text())
    assert config["architectures"] == ["CLIPTextModel"] and config["model_type"] == "clip_text_model"
    ref_model = transformers.CLIPTextModel.from_pretrained(str(tmp_path / "text_encoder"),
                                                           attn_implementation="eager").eval()
    assert ref_model.config.hidden_act == "gelu"
    load_both_ways_and_compare(ours, ref_model)
    again = CLIPTextEncoder.from_pretrained(tmp_path / "text_encoder")
    assert again.config == ours.config
    assert ours.save_pretrained(tmp_path / "bin", safe_serialization=False).name == "pytorch_model.bin"


def test_full_size_on_meta_has_published_names_and_shapes():
    with torch.device("meta"):
        ours = CLIPTextEncoder.from_config(FULL_CONFIG)
        ref_model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**FULL_CONFIG))
    expected = {"text_model." + k: tuple(v.shape) for k, v in ref_model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert ours.num_parameters() == 340_387_840
    x = torch.zeros(2, 77, dtype=torch.long, device="meta")
    assert ours(x).shape == (2, 77, 1024)
