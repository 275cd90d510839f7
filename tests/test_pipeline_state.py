"""The pipeline's state and components: every attribute declared in ``__init__``, the mixins keeping none of
their own, a pipeline without a text encoder run from embeddings, and the variant note saying what happened."""

from __future__ import annotations

import ast
import inspect
import textwrap
import warnings

import pytest
import torch

from t2vlab import TextToVideoPipeline, VideoToVideoPipeline


@pytest.fixture(scope="module")
def pipe(tiny):
    p = TextToVideoPipeline.from_pretrained(tiny)
    p.set_progress_bar_config(disable=True)
    return p


def assigned_attributes(cls) -> dict[str, set]:
    """{class name: names assigned as ``self.<name> = ...`` anywhere in its body}, for ``cls`` and its bases of
    the package (augmented, tuple and attribute targets included)."""
    found = {}
    for klass in cls.__mro__[:-1]:  # all but object
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        names = set()
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        names.add(t.attr)
        found[klass.__name__] = names
    return found


@pytest.mark.parametrize("cls", [TextToVideoPipeline, VideoToVideoPipeline])
def test_init_declares_every_attribute_the_class_sets_anywhere(cls):
    init = TextToVideoPipeline.__init__
    declared = {t.attr for t in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(init))))
                if isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store)}
    undeclared = {f"{k}.{name}" for k, names in assigned_attributes(cls).items() for name in names - declared}
    assert not undeclared, f"set outside TextToVideoPipeline.__init__: {sorted(undeclared)}"
    assert {"free_init", "free_noise", "prompt_interpolation_callback", "compiled", "offload_device"} <= declared


def test_the_mixins_keep_no_state_of_their_own():
    for klass in TextToVideoPipeline.__mro__[1:]:
        if not klass.__module__.startswith("t2vlab"):
            continue
        data = [k for k, v in vars(klass).items() if not k.startswith("__") and not callable(v)
                and not isinstance(v, (property, classmethod, staticmethod))]
        assert not data, f"{klass.__name__} holds class-level state {data}: declare it in the pipeline's __init__"


def test_the_declaration_check_sees_an_undeclared_attribute():
    class Leaky(TextToVideoPipeline):
        def enable_thing(self):
            self.thing = 1

    assert "thing" in assigned_attributes(Leaky)["Leaky"]


# ------------------------------------------------------------------- components that may be missing
def test_a_pipeline_without_text_encoder_runs_from_embeddings(pipe, tiny):
    cond, uncond = pipe.encode_prompt("a red circle", "cpu")
    full = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_frames=2, num_inference_steps=2,
                generator=torch.Generator().manual_seed(0), output_type="pt").frames
    bare = TextToVideoPipeline(pipe.unet, pipe.vae, None, None, pipe.scheduler)
    bare.set_progress_bar_config(disable=True)
    assert bare.to("cpu") is bare and set(bare.models) == {"unet", "vae"}  # to() skips what is missing
    out = bare(prompt_embeds=cond, negative_prompt_embeds=uncond, num_frames=2, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="pt").frames
    assert torch.equal(out, full)
    with pytest.raises(ValueError, match="prompt: this pipeline has no text_encoder and no tokenizer"):
        bare("a red circle", num_frames=2, num_inference_steps=2)
    with pytest.raises(ValueError, match="negative_prompt .*needs negative_prompt_embeds.*no text_encoder"):
        bare(prompt_embeds=cond, num_frames=2, num_inference_steps=2)
    assert "text_encoder" not in repr(bare)


def test_the_variant_note_says_what_was_loaded():
    def note(**kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = TextToVideoPipeline.from_pretrained("toy", variant="fp16", **kwargs)
        (message,) = [str(w.message) for w in caught if "variant" in str(w.message)]
        return message, pipe.unet.dtype

    message, dtype = note()
    assert dtype == torch.float32 and "float32" in message and "casting" not in message
    message, dtype = note(torch_dtype=torch.float16)
    assert dtype == torch.float16 and "casting them to torch.float16" in message


# ---------------------------------------------------------------- video-to-video and the techniques
def test_video_to_video_refuses_free_init_and_the_cli_says_so(tiny, tmp_path, capsys):
    from t2vlab.__main__ import main

    v2v = VideoToVideoPipeline.from_pretrained(tiny)
    v2v.enable_free_init(num_iters=2)
    video = torch.rand(1, 2, 64, 64, 3)
    with pytest.raises(ValueError, match="FreeInit does not combine with video-to-video"):
        v2v("a cat", video=video, num_inference_steps=2)
    source = tmp_path / "in.gif"
    from t2vlab import export_to_video

    export_to_video(video[0], source)
    code = main(["a cat", "--video", str(source), "--free-init", "2", "--model", str(tiny), "--steps", "2",
                 "--out", str(tmp_path / "out.mp4")])
    captured = capsys.readouterr()
    assert code == 2 and "FreeInit does not combine" in captured.err and "wrote" not in captured.out
    assert not (tmp_path / "out.mp4").exists()


def test_video_to_video_reschedules_the_added_noise_with_free_noise(tiny):
    v2v = VideoToVideoPipeline.from_pretrained(tiny)
    v2v.scheduler.set_timesteps(4)
    z0 = torch.zeros(1, 4, 12, 8, 8)
    t = v2v.scheduler.timesteps[:1]
    plain = v2v.noise_video(z0, t, torch.Generator().manual_seed(0))
    v2v.enable_free_noise(context_length=4, context_stride=2)
    rescheduled = v2v.noise_video(z0, t, torch.Generator().manual_seed(0))
    assert torch.equal(rescheduled[:, :, :4], plain[:, :, :4])  # the first window as drawn
    for f in range(4, 12):  # every later frame is a copy of one of the first window's frames
        assert any(torch.equal(rescheduled[:, :, f], plain[:, :, k]) for k in range(4))
    assert not torch.equal(rescheduled, plain)
