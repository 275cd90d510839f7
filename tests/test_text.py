"""Tokenizer and CLIP text encoder: real vocabulary, truncation, file layouts, parity with transformers.

transformers' ``CLIPTokenizer`` is what we wrap; its ``CLIPTextModel`` is only the oracle here.
Parity tolerance: relative error max|ours - ref| / max|ref| < 1e-5 in float32. Both sides do the
same float32 arithmetic in a different order (fused SDPA vs. explicit softmax, another mask
constant); a tiny 3-layer model leaves rounding near 1e-7, while any real mistake (mask, activation,
norm order, skipped layer) moves the output by 1e-2 or more.
"""

import json
import warnings

import pytest
import torch

from t2vlab import configs
from t2vlab.checkpoint import CheckpointError
from t2vlab.text import (
    CLIPTextConfig,
    CLIPTextEncoder,
    Tokenizer,
    bytes_to_unicode,
    clip_vocab_and_merges,
    token_text,
)

transformers = pytest.importorskip("transformers")

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]

FULL_CONFIG = configs.TEXT_ENCODER  # the published text_encoder/config.json


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default()


def test_vocabulary_is_clips():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # space is byte 32, the 33rd moved byte
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["<|startoftext|>"] == 49406
    assert vocab["".join(merges[0])] == 512  # first merge ("i", "n") -> "in"


def test_a_photo_of_a_cat(tok):
    out = tok("a photo of a cat")
    assert out.input_ids.dtype == torch.long and out.input_ids.shape == (1, 77)
    assert out.input_ids[0, :7].tolist() == CAT_IDS
    assert out.input_ids[0, 7:].tolist() == [0] * 70  # pads with "!" (id 0), as the published folder does
    assert out.attention_mask[0].tolist() == [1] * 7 + [0] * 70
    assert out["input_ids"] is out.input_ids and out.dropped == [""]


def test_list_of_prompts_empty_prompt_and_non_ascii(tok):
    out = tok(["", "a photo of a cat", "café 猫 🐱 naïve"])
    assert out.input_ids.shape == out.attention_mask.shape == (3, 77)
    assert out.input_ids[0, :3].tolist() == [49406, 49407, 0]
    assert out.attention_mask.sum(1).tolist()[:2] == [2, 7]
    ids = out.input_ids[2, : out.attention_mask[2].sum()].tolist()
    assert ids[0] == 49406 and ids[-1] == 49407 and 49407 not in ids[1:-1]
    assert tok.decode(ids) == "café 猫 🐱 naïve"
    assert "".join(tok.explain("café").pieces[1:-1]) == "café "


def test_truncation_warns_naming_dropped_words(tok):
    prompt = "a " * 75 + "purple elephant dancing"
    with pytest.warns(UserWarning, match="dropped: 'purple elephant dancing'"):
        out = tok(prompt)
    assert out.input_ids[0, :76].tolist() == [49406] + [320] * 75 and out.input_ids[0, 76] == 49407
    assert out.dropped == ["purple elephant dancing"]
    e = tok.explain(prompt)
    assert e.dropped == "purple elephant dancing" and e.padding == 0 and len(e.tokens) == 77
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("a " * 75)  # exactly 77 with start and end: fits, no warning


def test_explain(tok):
    e = tok.explain("a photo of a cat")
    assert e.tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>",
                        "<|endoftext|>"]
    assert e.ids == CAT_IDS and e.padding == 70 and e.dropped == ""
    assert e.special["pad"] == ("!", 0) and e.special["end"] == ("<|endoftext|>", 49407)
    assert "cat</w>" in str(e)
    assert token_text("cafÃ©</w>") == "café "


@pytest.mark.parametrize("bad, error", [(3, TypeError), ([1, 2], TypeError), (None, TypeError),
                                        ([], ValueError)])
def test_bad_prompts_are_refused(tok, bad, error):
    with pytest.raises(error, match="prompts"):
        tok(bad)


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


def test_sd2_style_special_tokens_and_tokenizer_json_only(tok, tmp_path):
    # SD 2.x / ms-1.7b style: special tokens written as dicts, pad "!" in both json files
    folder = tok.save_pretrained(tmp_path / "published")
    as_dict = {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
               "single_word": False}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = json.loads((folder / name).read_text())
        data.update(eos_token=as_dict, unk_token=as_dict, pad_token="!")
        (folder / name).write_text(json.dumps(data))
    published = Tokenizer.from_pretrained(folder, subfolder=None)
    assert published.special_tokens["pad"] == ("!", 0)
    # transformers 5 writes tokenizer.json (+ tokenizer_config.json) only
    published.tokenizer.save_pretrained(tmp_path / "v5")
    assert not (tmp_path / "v5" / "vocab.json").exists()
    v5 = Tokenizer.from_pretrained(tmp_path / "v5", subfolder=None)
    assert v5("a photo of a cat").input_ids[0, :8].tolist() == CAT_IDS + [0]


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Tokenizer.from_pretrained(tmp_path, subfolder=None)


# -------------------------------------------------------------------------------------- text encoder
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)


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


def inputs(batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, 77), generator=g)
    lengths = [5, 30, 77][:batch]
    mask = (torch.arange(77)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


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


def test_backends_agree_and_masks_matter():
    ours = ours_from(oracle("gelu"))
    ids, mask = inputs()
    with torch.no_grad():
        fused = ours(ids, attention_mask=mask)
        for backend in ("math", "sliced"):
            ours.set_attention_backend(backend, slice_size=3)
            assert rel_err(ours(ids, attention_mask=mask), fused) < 1e-5
        # causality: changing the last token leaves all earlier positions unchanged
        ours.set_attention_backend("sdpa")
        ids2 = ids.clone()
        ids2[:, -1] = 7
        changed = ours(ids2)
        base = ours(ids)
        assert torch.allclose(changed[:, :-1], base[:, :-1], rtol=0, atol=1e-6)
        assert not torch.allclose(changed[:, -1], base[:, -1], atol=1e-3)


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


@pytest.mark.parametrize("change", [dict(hidden_size=30), dict(num_hidden_layers=0), dict(hidden_act="relu"),
                                    dict(layer_norm_eps=-1.0), dict(vocab_size=-5)])
def test_absurd_configs_are_refused(change):
    with pytest.raises(CheckpointError):
        CLIPTextEncoder.from_config({**TINY, **change})


def test_bad_forward_arguments():
    ours = CLIPTextEncoder(CLIPTextConfig(**TINY))
    with pytest.raises(ValueError, match="clip_skip"):
        ours(torch.zeros(1, 77, dtype=torch.long), clip_skip=4)
    with pytest.raises(ValueError, match="input_ids"):
        ours(torch.zeros(1, 78, dtype=torch.long))
