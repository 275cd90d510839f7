"""Tokenizer and CLIP text encoder: real vocabulary, truncation, file layouts, attention backends, bad
configs and arguments.

transformers' ``CLIPTokenizer`` is what ``Tokenizer`` wraps (a dependency of the package); its
``CLIPTextModel`` is only an oracle, used in tests/parity/test_text_parity.py.
"""

import json
import warnings

import pytest
import torch

from t2vlab.checkpoint import CheckpointError
from t2vlab.text_encoder import CLIPTextConfig, CLIPTextEncoder
from t2vlab.tokenizer import Tokenizer, bytes_to_unicode, clip_vocab_and_merges, token_text

from .helpers import CAT_IDS, rel_err
from .helpers import TEXT_TINY as TINY
from .helpers import text_inputs as inputs


# ----------------------------------------------------------------------------------------- tokenizer
# tok: the tokenizer with its real vocabulary (tests/conftest.py)
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
def random_encoder(hidden_act, seed=0):
    """TINY with random weights: PyTorch's initialisation, then every parameter perturbed (LayerNorms start
    at 1/0) so every one matters."""
    torch.manual_seed(seed)
    ours = CLIPTextEncoder.from_config({**TINY, "hidden_act": hidden_act})
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return ours.eval()


def test_backends_agree_and_masks_matter():
    ours = random_encoder("gelu")
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
