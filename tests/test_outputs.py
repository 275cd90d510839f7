"""Outputs read by name and by position, as diffusers' do: ``out[0]`` is ``out.frames``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.outputs import Output

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Pair(Output):
    first: object = None
    second: object = None


def test_an_output_indexes_like_a_tuple_of_its_set_fields_and_by_name():
    out = Pair(first=None, second="b")  # a field left None is skipped, as diffusers' BaseOutput skips it
    assert out[0] == "b" and out["second"] == "b" and out.to_tuple() == ("b",) and out.keys() == ("second",)
    assert len(out) == 1 and list(out) == ["b"]
    full = Pair("a", "b")
    assert full[0] == "a" and full[1] == "b" and full[-1] == "b" and full[:1] == ("a",)
    (a, b) = full
    assert (a, b) == ("a", "b")
    with pytest.raises(IndexError):
        full[2]
    with pytest.raises(KeyError, match="no field 'first' set"):
        out["first"]


def test_the_pipelines_output_is_its_frames_three_ways(tiny):
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_frames=2, num_inference_steps=2, output_type="pt")
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw)
    assert out[0] is out.frames and out["frames"] is out.frames and out.to_tuple() == (out.frames,)
    (frames,) = pipe("a red circle", generator=torch.Generator().manual_seed(0), return_dict=False, **kw)
    assert torch.equal(frames, out[0])
