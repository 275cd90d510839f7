"""The command line's directing and LoRA options on the tiny checkpoint: --prompt-syntax, --loop, --lora with
--lora-weight-name and --lora-scale reach the pipeline (each changes the video, and only what it should), the
summary names them, and bad uses are messages; batch's --prompt-syntax is part of a job's settings."""

from __future__ import annotations

import json

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab.__main__ import lora_source, main
from t2vlab.lora import add_lora, lora_layers, lora_targets
from t2vlab.techniques.consistency import add_guidance_embedding
from tests.helpers import turbo_list

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--model", "tiny", "--steps", "2", "--frames", "4", "--size", "32"]


def video(tmp_path, name, *args, model=TINY):
    """The bytes of the GIF the command writes (a GIF of the same frames is the same bytes)."""
    out = tmp_path / f"{name}.gif"
    assert main([*args, "--out", str(out), *model]) == 0
    return out.read_bytes()


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    """A LoRA for the tiny checkpoint in diffusers' layout, its B matrices non-zero (a fresh one does nothing)."""
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    add_lora(pipe.unet, lora_targets(pipe.unet), rank=2)
    torch.manual_seed(0)
    for layer in lora_layers(pipe.unet).values():
        for b in layer.lora_B.values():
            torch.nn.init.normal_(b.weight, std=0.5)
    folder = tmp_path_factory.mktemp("lora")
    pipe.save_lora_weights(folder)
    return folder


def test_prompt_syntax_reads_the_weights_and_plain_reads_them_as_text(tmp_path, capsys):
    plain = video(tmp_path, "plain", "a (red:1.5) square")
    weighted = video(tmp_path, "a1111", "a (red:1.5) square", "--prompt-syntax", "a1111")
    assert weighted != plain
    assert "a1111 prompt syntax" in capsys.readouterr().out
    # weights of 1 everywhere are the plain text's numbers: the option changes nothing else
    ones = video(tmp_path, "ones", "a red square", "--prompt-syntax", "a1111")
    assert ones == video(tmp_path, "text", "a red square")


def test_loop_reaches_the_pipeline(tmp_path, capsys):
    # on the trained toy: the tiny checkpoint's temporal convolutions are zero-initialised (as a fresh model's
    # are), so padding them circularly changes nothing there
    toy = ["--model", "toy", *TINY[2:]]
    assert video(tmp_path, "loop", "a red square", "--loop", model=toy) != video(tmp_path, "open", "a red square",
                                                                               model=toy)
    assert "loop" in capsys.readouterr().out


def test_loop_with_a_video_is_refused_before_loading(tmp_path, capsys):
    clip = tmp_path / "clip.gif"
    clip.write_bytes(b"GIF89a")
    with pytest.raises(SystemExit):
        main(["x", "--video", str(clip), "--loop", "--out", str(tmp_path / "v.gif")])
    assert "--loop: only when generating" in capsys.readouterr().err


def test_lora_changes_the_video_and_scale_zero_is_the_plain_model(tmp_path, lora_folder, capsys):
    plain = video(tmp_path, "plain", "a red square")
    with_lora = video(tmp_path, "lora", "a red square", "--lora", str(lora_folder))
    said = capsys.readouterr().out
    assert with_lora != plain
    assert "loaded as adapter 'default_0'" in said and "1 LoRA" in said
    assert video(tmp_path, "off", "a red square", "--lora", str(lora_folder), "--lora-scale", "0") == plain
    named = video(tmp_path, "named", "a red square", "--lora", str(lora_folder),
                  "--lora-weight-name", "pytorch_lora_weights.safetensors")
    assert named == with_lora


def test_a_t2v_turbo_list_gives_the_unet_its_guidance_embedding_first(tmp_path, capsys):
    """T2V-Turbo's file has one (up, down) pair more than a UNet without a guidance embedding (its cond_proj): the
    CLI gives the UNet one (seeded), says so, and the LoRA then acts; the same list without the embedding's pair is
    an ordinary LoRA that fits as it is (nothing added)."""
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    add_guidance_embedding(pipe.unet, 16)
    torch.save(turbo_list(pipe.unet, rank=2), tmp_path / "unet_lora.pt")
    plain = video(tmp_path, "plain", "a red square")
    turbo = video(tmp_path, "turbo", "a red square", "--lora", str(tmp_path / "unet_lora.pt"))
    out = capsys.readouterr().out
    assert "gave this one time_embedding.cond_proj (16 -> 32, drawn from seed 0" in out and turbo != plain
    # the same file twice gives the same video: the embedding is drawn from a fixed seed
    assert video(tmp_path, "again", "a red square", "--lora", str(tmp_path / "unet_lora.pt")) == turbo


def test_a_lora_that_cannot_be_read_is_a_message(tmp_path, capsys):
    assert main(["x", "--out", str(tmp_path / "v.gif"), *TINY, "--lora", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t2vlab: --lora:") and "missing" in err and "Traceback" not in err


def test_lora_source_splits_a_hub_id_from_its_subfolder(tmp_path):
    assert lora_source("yhzhai/mcm/modelscopet2v-webvid") == ("yhzhai/mcm", "modelscopet2v-webvid")
    assert lora_source("jiachenli-ucsb/T2V-Turbo-MS") == ("jiachenli-ucsb/T2V-Turbo-MS", None)
    assert lora_source("owner/name/a/b") == ("owner/name", "a/b")
    local = tmp_path / "x" / "y"
    local.mkdir(parents=True)
    assert lora_source(str(local)) == (str(local), None)  # a path that exists is a path, however deep


def test_batch_prompt_syntax_is_a_setting_of_the_job(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a (red:1.5) square\n")
    for syntax, out in (("plain", tmp_path / "plain"), ("a1111", tmp_path / "a1111")):
        assert main(["batch", str(prompts), "--out", str(out), "--prompt-syntax", syntax, "--quiet",
                     *TINY]) == 0
    (plain,), (weighted,) = (sorted((tmp_path / n).glob("*.json")) for n in ("plain", "a1111"))
    assert "prompt_syntax" not in json.loads(plain.read_text())  # a plain job is named as it always was
    assert json.loads(weighted.read_text())["prompt_syntax"] == "a1111"
    assert plain.name != weighted.name  # its own video, not taken for the plain one on a resume
    assert plain.with_suffix(".mp4").read_bytes() != weighted.with_suffix(".mp4").read_bytes()


def test_batch_lora_reaches_every_video_and_is_a_setting_of_the_job(tmp_path, lora_folder, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n")
    runs = {"plain": [], "lora": ["--lora", str(lora_folder)], "half": ["--lora", str(lora_folder), "--lora-scale",
                                                                          "0.5"]}
    for name, extra in runs.items():
        assert main(["batch", str(prompts), "--out", str(tmp_path / name), "--quiet", *extra, *TINY]) == 0
    sidecar = {name: sorted((tmp_path / name).glob("*.json"))[0] for name in runs}
    assert "lora" not in json.loads(sidecar["plain"].read_text())  # a plain job is named as it always was
    assert json.loads(sidecar["lora"].read_text())["lora"] == [[str(lora_folder)], 1.0]
    assert len({p.name for p in sidecar.values()}) == 3  # each its own video, not taken for another on a resume
    videos = {name: p.with_suffix(".mp4").read_bytes() for name, p in sidecar.items()}
    assert len(set(videos.values())) == 3  # the LoRA acts, and at half weight differently
    assert f"LoRA {lora_folder} loaded" in capsys.readouterr().out
    assert main(["batch", str(prompts), "--out", str(tmp_path / "bad"), "--quiet", "--lora",
                 str(tmp_path / "missing"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t2vlab batch:") and "missing" in err and "Traceback" not in err
