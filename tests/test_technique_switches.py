"""The CLI's and the studio's switches of the techniques (FreeNoise, FreeInit, FreeU, DeepCache, prompt travel) on
the tiny checkpoint: each reaches the pipeline, each changes the video, and bad values are messages."""

from __future__ import annotations

import pytest

from t2vlab import TextToVideoPipeline
from t2vlab.__main__ import main, parse_args, prompt_of
from t2vlab.widgets import Studio
from t2vlab.widgets.generation import Settings, configure
from tests.helpers import exit_code

TINY = ["--model", "tiny", "--steps", "2", "--frames", "6", "--size", "32"]


def test_cli_parses_the_switches():
    args = parse_args(["a red square", "--free-noise", "--free-init", "3", "--freeu",
                       "--prompt-at", "16", "a blue square", "--prompt-at", "20", "a green square"])
    assert args.free_noise is True and args.free_init == 3 and args.freeu
    assert prompt_of(args) == {0: "a red square", 16: "a blue square", 20: "a green square"}
    assert parse_args(["x", "--free-noise", "8"]).free_noise == 8
    assert prompt_of(parse_args(["x"])) == "x"
    with pytest.raises(SystemExit):
        parse_args(["x", "--prompt-at", "first", "y"])


def test_cli_generates_with_every_switch(tmp_path, capsys):
    out = tmp_path / "long.gif"
    assert main(["a red square", "--out", str(out), *TINY, "--free-noise", "4", "--free-init", "2", "--freeu",
                 "--prompt-at", "3", "a blue square"]) == 0
    assert out.stat().st_size > 0
    said = capsys.readouterr().out
    assert all(name in said for name in ("FreeNoise", "FreeInit", "FreeU", "prompt travel"))


@pytest.mark.parametrize("extra, words", [(["--free-noise", "0"], "argument --free-noise: must be a positive integer"),
                                          (["--free-init", "0"], "argument --free-init: must be a positive integer"),
                                          (["--prompt-at", "99", "late"], "prompt: keyframe 99 is outside")])
def test_cli_bad_values_are_a_message_not_a_traceback(tmp_path, capsys, extra, words):
    # a value that is wrong on its face stops the parser (exit 2, before any model loads); one that only the
    # pipeline can judge (a keyframe past the video's end) is its message, also exit 2
    assert exit_code(main, ["x", "--out", str(tmp_path / "v.gif"), *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_studio_switches_reach_the_pipeline_and_back_off(tmp_path):
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    studio = Studio(pipe, Settings(prompt="a red square", steps=2, frames=6, height=32, width=32, scheduler="ddim"),
                    out_dir=tmp_path)
    studio.free_noise.value, studio.free_init.value, studio.freeu.value = 4, 2, True
    studio.prompt_at.value = "3: a blue square"
    result = studio.run()
    assert result is not None, studio.status.value
    assert pipe.free_noise.context_length == 4 and pipe.free_init.num_iters == 2 and pipe.unet.freeu_enabled
    assert studio.progress.value == studio.progress.max == 4  # 2 steps x 2 FreeInit passes
    assert len(result.trajectory) == 2  # the last pass
    assert "FreeNoise 4" in result.settings.summary() and "prompt travel" in result.settings.summary()
    configure(pipe, Settings(scheduler="ddim"))
    assert pipe.free_noise is None and pipe.free_init is None and not pipe.unet.freeu_enabled


def test_studio_names_a_bad_prompt_travel_line(tmp_path):
    studio = Studio(TextToVideoPipeline.from_pretrained("tiny"),
                    Settings(prompt="x", steps=1, frames=4, height=32, width=32, scheduler="ddim"), out_dir=tmp_path)
    studio.prompt_at.value = "3: fine\nlater: wrong"
    assert studio.run() is None
    assert "prompt travel, line 2" in studio.status.value
    studio.prompt_at.value = "9: too late"
    assert studio.run() is None and "outside" in studio.status.value


@pytest.mark.parametrize("flags", [["--free-noise", "4"], ["--free-init", "2"], ["--freeu"], ["--deepcache", "2"],
                                   ["--prompt-at", "3", "a blue square"]], ids=lambda f: f[0])
def test_each_cli_switch_changes_the_video_and_the_summary_names_only_what_ran(flags):
    """Each switch the CLI lists in its summary really acts: the video differs from the plain one (on a UNet with
    no zero-initialised layer, so the temporal attention's windows matter too)."""
    import torch

    from t2vlab.__main__ import switch_on

    from .helpers import tiny_pipe

    pipe = tiny_pipe(seed=5, std=0.1)

    def video(args):
        return pipe(prompt_of(args), num_frames=6, height=32, width=32, num_inference_steps=4, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).frames

    plain = video(parse_args(["a red square"]))
    args = parse_args(["a red square", *flags])
    switch_on(pipe, args)
    assert not torch.equal(video(args), plain), f"{flags[0]} changed nothing"


def test_studio_loop_and_prompt_syntax_reach_the_pipeline(tmp_path):
    """The loop checkbox and the prompt-syntax dropdown are passed to the call: each changes the video (on a UNet with
    no zero-initialised layer, so the circular temporal convolutions act), and the summary names them; weights of 1
    in a1111's syntax are the plain prompt's video."""
    from .helpers import tiny_pipe

    studio = Studio(tiny_pipe(seed=5, std=0.1), Settings(prompt="a (red:1.5) square", steps=2, frames=4, height=32,
                                                         width=32, scheduler="ddim"), out_dir=tmp_path)
    assert studio.prompt_syntax.options == ("plain", "a1111", "compel") and studio.prompt_syntax.value == "plain"

    def frames():
        result = studio.run()
        assert result is not None, studio.status.value
        return result.frames, result.settings.summary()

    plain, summary = frames()
    assert "loop" not in summary and "prompt syntax" not in summary
    studio.loop.value = True
    looped, summary = frames()
    assert "loop" in summary and not (looped == plain).all()
    studio.loop.value = False
    studio.prompt_syntax.value = "a1111"
    weighted, summary = frames()
    assert "a1111 prompt syntax" in summary and not (weighted == plain).all()
    studio.prompt.value = "a red square"
    ones, _ = frames()
    studio.prompt_syntax.value = "plain"
    assert (frames()[0] == ones).all()


def test_studio_few_steps_menu_loads_the_student_sets_its_sampler_and_takes_it_off_again(tmp_path):
    """Choosing the toy's distilled student sets LCM, its steps and guidance 1.0, loads the student (the video is
    the student's: load_distilled's, by hand) and names it in the summary; "off" takes it off (the plain video
    again, bit for bit) and restores the checkpoint's sampler, steps and guidance."""
    import torch

    from t2vlab.distill import load_distilled

    pipe = TextToVideoPipeline.from_pretrained("toy")
    studio = Studio(pipe, Settings(prompt="a red circle moving left", steps=3, frames=8, height=64, width=64,
                                   scheduler="dpm++", guidance=9.0), out_dir=tmp_path)
    plain = studio.run().frames
    studio.few_steps.value = "few-steps-toy-student"
    assert (studio.scheduler.value, studio.steps.value, studio.guidance.value) == ("lcm-upper", 4, 1.0)
    result = studio.run()
    assert result is not None, studio.status.value
    assert "toy-student" in result.settings.summary() and pipe.get_list_adapters()["unet"] == ["few-steps-toy-student"]
    by_hand = TextToVideoPipeline.from_pretrained("toy")
    settings = load_distilled(by_hand)
    expected = by_hand("a red circle moving left", num_frames=8, height=64, width=64, guidance_scale=1.0,
                       num_inference_steps=settings["num_inference_steps"], output_type="np",
                       generator=torch.Generator().manual_seed(0)).frames[0]
    assert abs(result.frames - expected).max() < 1e-6  # the same student, sampler and noise: float32 rounding
    studio.few_steps.value = "off"
    rec = pipe.recommended
    assert (studio.scheduler.value, studio.steps.value, studio.guidance.value) == (
        rec.scheduler, rec.num_inference_steps, rec.guidance_scale)
    studio.scheduler.value, studio.steps.value, studio.guidance.value = "dpm++", 3, 9.0
    assert (studio.run().frames == plain).all() and pipe.get_list_adapters()["unet"] == []


def test_studio_t2v_turbo_gets_its_guidance_embedding_and_loses_it_with_the_adapter(tiny, tmp_path, offline_cache):
    import torch

    from t2vlab.techniques.consistency import add_guidance_embedding
    from t2vlab.widgets.generation import configure_few_steps
    from tests.helpers import hub_cache, turbo_list

    pipe = TextToVideoPipeline.from_pretrained(tiny)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    made = TextToVideoPipeline.from_pretrained(tiny)
    add_guidance_embedding(made.unet, 16)
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save(turbo_list(made.unet, rank=2), repo / "unet_lora.pt")
    hub_cache(offline_cache, "jiachenli-ucsb/T2V-Turbo-MS", repo)
    configure_few_steps(pipe, Settings(few_steps="few-steps-t2v-turbo"))
    assert pipe.guidance_embedded and pipe.get_list_adapters()["unet"] == ["few-steps-t2v-turbo"]
    assert pipe.recommended.scheduler == "lcm-t2v-turbo"
    configure_few_steps(pipe, Settings(few_steps="off"))
    assert not pipe.guidance_embedded and pipe.get_list_adapters()["unet"] == []
    after = pipe.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
