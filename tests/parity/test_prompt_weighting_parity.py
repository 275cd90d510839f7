"""compel's weighted prompts against compel 2.5.1 itself: its parser read on the same prompts, and its
embeddings (``Compel(tokenizer=..., text_encoder=...)`` on transformers' CLIPTextModel with random weights)
against ours (``prompt_syntax="compel"`` on our CLIPTextEncoder loaded with the same weights).

Tolerance: relative error max|ours - ref| / max|ref| < 1e-5 in float32, as for the text encoder alone
(tests/parity/test_text_parity.py): the two encoders do the same arithmetic in another order (about 1e-7
apart), and compel's rule adds a few float32 operations on top; a wrong rule (a weight factor, the
masking of a down-weighted fragment, the tan blend, the normalisation of a blend) moves the output by
1e-3 or more, and each case checks that its weights move the embedding that much.
"""

import types

import pytest
import torch

from t2vlab.techniques import prompt_weighting as pw
from t2vlab.text_encoder import CLIPTextEncoder
from tests.helpers import TEXT_TINY, rel_err

compel = pytest.importorskip("compel")
transformers = pytest.importorskip("transformers")
from compel.embeddings_provider import ReturnedEmbeddingsType, SplitLongTextMode  # noqa: E402
from compel.prompt_parser import Blend as CompelBlend  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("one_thread")]

# compel prompts: up- and down-weighting, nesting, quotes, weight 0, blend (normalised or not), and
PROMPTS = [
    "a cat+ sitting on a mat",
    "a cat-- sitting on a (red mat)0.5",
    "(a (cat)++ dog)0.8 in the park",
    '"golden hour"1.3, a (fox)+++ jumping, (lazy dog)0.7',
    "a (cat)0 and a dog",
    '("a cat", "a dog").blend(0.7, 0.3)',
    '("a cat++", "a (dog)0.6").blend(1, 2, no_normalize)',
    '("a cat", "a dog in the rain").and(1, 0.5)',
]


@pytest.fixture(scope="module")
def models():
    """transformers' CLIPTextModel (tiny, the real 49,408-token vocabulary, every parameter perturbed) and
    our encoder with the same weights."""
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(attn_implementation="eager", **dict(TEXT_TINY, vocab_size=49408))
    ref = transformers.CLIPTextModel(config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = CLIPTextEncoder.from_config(ref.config.to_dict())
    ours.load_state_dict(CLIPTextEncoder.convert_state_dict(ref.state_dict()), strict=True)
    return ref, ours.eval()


def fragments_as_tokens(tok, fragments):
    return [(i, round(w, 12)) for text, w in fragments for i in pw.token_ids(tok, text)]


def compel_as_tokens(tok, conjunction):
    """compel's parse, with each fragment's text replaced by its tokens (what the rule reads)."""
    parts = []
    for p in conjunction.prompts:
        if isinstance(p, CompelBlend):
            parts.append(([fragments_as_tokens(tok, [(f.text, f.weight) for f in q.children]) for q in p.prompts],
                          p.weights, p.normalize_weights))
        else:
            parts.append(fragments_as_tokens(tok, [(f.text, f.weight) for f in p.children]))
    return parts, conjunction.weights


def ours_as_tokens(tok, parsed):
    if isinstance(parsed, pw.Blend):
        return [([fragments_as_tokens(tok, p) for p in parsed.prompts], parsed.weights, parsed.normalize)], [1.0]
    if isinstance(parsed, pw.Conjunction):
        return [fragments_as_tokens(tok, p) for p in parsed.prompts], parsed.weights
    return [fragments_as_tokens(tok, parsed)], [1.0]


@pytest.mark.parametrize("prompt", PROMPTS + [
    "x-ray, cat++,dog", "(wait...)1.2", "a \\(cat\\) dog", "(cat)-1", "(cat).5 dog", "cat++dog", "a,b,,c", "",
    "(one, two. three)1.3", "a+b+ c", '"a (nested)1.5 quote"0.7 end', "café 猫-- naïve++", "(blue)+++ sky---"])
def test_parser_reads_as_compel_does(tok, prompt):
    """Token by token, the same weights as compel's own parser (texts may differ in spacing only)."""
    theirs = compel.Compel.parse_prompt_string(prompt)
    assert ours_as_tokens(tok, pw.parse_compel(prompt)) == compel_as_tokens(tok, theirs)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_embeddings_match_compel(models, tok, prompt):
    ref, ours = models
    with torch.no_grad():
        expected = compel.Compel(tokenizer=tok.tokenizer, text_encoder=ref)(prompt)
    got, _ = pw.encode_prompts(tok, ours, prompt, prompt_syntax="compel")
    assert got.shape == expected.shape == (1, 154 if ".and(" in prompt else 77, 32)  # and: the parts side by side
    assert rel_err(got, expected) < 1e-5
    assert rel_err(unweighted(tok, ours, prompt), expected) > 1e-3  # the weights matter, or this tests nothing


def words(fragments):
    return " ".join(text for text, _ in fragments)


def unweighted(tok, encoder, prompt):
    """The prompt's words without weights, plain (a blend: its first prompt; and: its parts side by side)."""
    parsed = pw.parse_compel(prompt)
    texts = [words(p) for p in parsed.prompts] if isinstance(parsed, pw.Conjunction) else \
        [words(parsed.prompts[0] if isinstance(parsed, pw.Blend) else parsed)]
    return torch.cat([pw.encode_prompts(tok, encoder, t)[0] for t in texts], dim=1)


def test_clip_skip_matches_compels_penultimate_layer(models, tok, monkeypatch):
    ref, ours = models
    prompt = "a cat-- sitting on a (red mat)1.4"
    # compel 2.5.1 reaches the final norm as text_encoder.text_model.final_layer_norm, where transformers 5's
    # CLIPTextModel keeps it at the top: point the old name at it for this test
    monkeypatch.setattr(ref, "text_model", types.SimpleNamespace(final_layer_norm=ref.final_layer_norm), raising=False)
    with torch.no_grad():
        expected = compel.Compel(tokenizer=tok.tokenizer, text_encoder=ref,
                                 returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED)(
            prompt)
    got, _ = pw.encode_prompts(tok, ours, prompt, prompt_syntax="compel", clip_skip=1)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(pw.encode_prompts(tok, ours, prompt, prompt_syntax="compel")[0], expected) > 1e-3


def test_long_prompt_and_negative_match_compel_without_truncation(models, tok):
    """Over 75 tokens: compel with truncate_long_prompts=False and brutal splitting (chunks of exactly 75), a
    down-weighted fragment across the chunk boundary; the negative padded as compel pads it."""
    ref, ours = models
    prompt = " ".join(["cat"] * 70) + " (a red mat on the floor)0.6 " + " ".join(["dog"] * 30) + " sun++"
    negative = "blurry--, ugly"
    assert len(pw.token_ids(tok, words(pw.parse_compel(prompt)))) > 100
    c = compel.Compel(tokenizer=tok.tokenizer, text_encoder=ref, truncate_long_prompts=False,
                      split_long_text_mode=SplitLongTextMode.BRUTAL)
    with torch.no_grad():
        expected = c.pad_conditioning_tensors_to_same_length([c(prompt), c(negative)])
    got = pw.encode_prompts(tok, ours, prompt, negative, prompt_syntax="compel")
    for g, e in zip(got, expected):
        assert g.shape == e.shape == (1, 154, 32)
        assert rel_err(g, e) < 1e-5
