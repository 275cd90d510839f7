"""The original text encoder against OpenCLIP: an ``open_clip_pytorch_model.bin`` written by
open-clip-torch's own CLIP model, loaded by t2vlab, gives ModelScope's penultimate-layer context; and our
tokenizer (CLIP's real vocabulary) gives OpenCLIP's token ids.

Tolerance: 1e-5 relative, float32 (see test_original_modelscope.py); the oracle's forward is ModelScope's
``FrozenOpenCLIPEmbedder(layer="penultimate")``: token + position embedding, every block but the last
with the causal mask, ``ln_final``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ftfy")  # open_clip's tokenizer needs it

import torch  # noqa: E402

from t2vlab import original  # noqa: E402
from t2vlab.tokenizer import Tokenizer  # noqa: E402
from tests.helpers import randomize_, rel_err  # noqa: E402
from tests.parity.oracles import open_clip_files  # noqa: E402

open_clip_model, open_clip_tokenizer = open_clip_files()  # skips this module without open-clip-torch
pytestmark = pytest.mark.parity
TOL = 1e-5

# text towers of different widths and depths, heads 64 wide as in ViT-H-14 (1024 wide, 16 heads, 24 blocks)
TOWERS = {"64-wide-3-blocks": dict(width=64, heads=1, layers=3),
          "128-wide-4-blocks": dict(width=128, heads=2, layers=4)}
VISION = dict(image_size=32, layers=1, width=64, head_width=64, patch_size=16)  # present in the file, never read


def open_clip_clip(tower, seed):
    torch.manual_seed(seed)
    model = open_clip_model.CLIP(embed_dim=32, vision_cfg=VISION, nonscalar_logit_scale=True,
                                 text_cfg=dict(context_length=77, vocab_size=49408, **tower))
    return randomize_(model, seed=seed).eval()


def penultimate(model, ids):
    """ModelScope's FrozenOpenCLIPEmbedder(layer="penultimate").encode_with_transformer."""
    x = model.token_embedding(ids) + model.positional_embedding
    batch_first = getattr(model.transformer, "batch_first", False)
    x = x if batch_first else x.permute(1, 0, 2)
    for block in model.transformer.resblocks[:-1]:
        x = block(x, attn_mask=model.attn_mask)
    x = x if batch_first else x.permute(1, 0, 2)
    return model.ln_final(x)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_text_encoder_equals_open_clip_penultimate_layer(tmp_path, name):
    theirs = open_clip_clip(TOWERS[name], seed=len(name))
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(theirs.state_dict(), path)  # how OpenCLIP's published weights are stored: the whole model
    ckpt = original.OriginalCheckpoint(tmp_path, {"text_encoder": path}, {}, 16, {})
    ours = original.load_component(ckpt, "text_encoder")
    assert ours.config.num_hidden_layers == TOWERS[name]["layers"] - 1  # the last block is dropped
    assert ours.config.num_attention_heads == TOWERS[name]["heads"]
    ids = Tokenizer.open_clip()(["a panda playing a guitar", "an astronaut riding a horse on the moon"]).input_ids
    with torch.no_grad():
        expected = penultimate(theirs, ids)
        got = ours(ids)
    err = rel_err(got, expected)
    assert err < TOL, f"relative error {err:.2e}"
    with torch.no_grad():  # and it is the penultimate layer, not the last: the last block would differ
        last = theirs.ln_final(theirs.transformer(theirs.token_embedding(ids) + theirs.positional_embedding,
                                                  attn_mask=theirs.attn_mask))
    assert rel_err(got, last) > 1e-2


PROMPTS = [
    "Spiderman is surfing",
    "wow!!! a cat!",
    "fish &amp; chips, “quoted” and ‘single’, rock &#39;n&#39; roll",
    "an astronaut riding a horse on the moon, 4k, highly detailed",
    "A cat's  tail -- twitching (slowly)!!!",
    "café au lait, naïve façade, Straße",
    "1girl, walking, 2 dogs; 3.5 seconds @ 24fps #anime",
    "UPPER case and MiXeD case words",
    "a red circle moving left",
    "",
    "word " * 100,  # truncated: the end token kept at position 77
]


def test_token_ids_equal_open_clip():
    with pytest.warns(UserWarning, match="longer than"):  # the 100-word prompt
        ours = Tokenizer.open_clip()(PROMPTS).input_ids
    theirs = open_clip_tokenizer.tokenize(PROMPTS)
    assert ours.shape == theirs.shape == (len(PROMPTS), 77)
    for prompt, a, b in zip(PROMPTS, ours.tolist(), theirs.tolist()):
        assert a == b, prompt
