"""Recording attention maps (t2vlab.unet.capture_attention): every map, rows summing to one, and the model
left as it was."""

from __future__ import annotations

import pytest
import torch

from t2vlab import TextToVideoPipeline, capture_attention


@pytest.fixture(scope="module")
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def test_capture_attention_records_every_map_and_leaves_the_model_as_it_was(pipe):
    unet = pipe.unet
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(x, 500, text)
        with capture_attention(unet) as maps:
            recorded = unet(x, 500, text)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)  # the written-out formula, same numbers
    assert len(maps.cross) == len(maps.cross_sizes) > 0 and len(maps.temporal) == len(maps.temporal_sizes) > 0
    for probs, (h, w) in zip(maps.cross, maps.cross_sizes):
        assert probs.shape[0] == 3 and probs.shape[2:] == (h * w, 77)
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    for probs, (h, w) in zip(maps.temporal, maps.temporal_sizes):
        assert probs.shape[0] == h * w and probs.shape[2:] == (3, 3)
    assert (8, 8) in maps.cross_sizes and (8, 8) in maps.temporal_sizes
    assert all(not m.keep_probs and m.last_probs is None for m in unet.attention_modules())
