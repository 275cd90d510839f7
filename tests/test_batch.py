"""python -m t2vlab batch (t2vlab.batch): reading PROMPTS, stable names, resuming, failures, N processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2vlab import TextToVideoPipeline, atomic, batch
from t2vlab.__main__ import main
from t2vlab.batch import Job, generate, plan, read_prompts

from .helpers import fails_half_way, free_port

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--steps", "2", "--frames", "2", "--quiet"]  # the tiny checkpoint, 64x64: seconds per call

PROMPTS = """\
# a comment line is neither a prompt nor a problem
a red circle moving left
{"prompt": "a blue square moving up", "seed": 3}
{"prompt": "a green circle", "frames": 3}
a red circle moving right
"""


def write_prompts(tmp_path, text=PROMPTS):
    path = tmp_path / "prompts.txt"
    path.write_text(text, encoding="utf-8")
    return path


def videos(folder):
    return sorted(p.name for p in Path(folder).glob("*.mp4") if not p.name.startswith("."))  # not temporary files


def test_bad_lines_are_reported_with_their_line_number(tmp_path):
    path = write_prompts(tmp_path, "\n".join([
        "a fine prompt",                                  # 1
        "   ",                                            # 2 empty
        '{"prompt": "x", "seed": 1',                      # 3 invalid JSON
        '{"prompt": "x", "colour": "red"}',               # 4 unknown setting
        '{"prompt": "x", "frames": 0}',                   # 5 bad value
        '{"prompt": "x", "guidance": "high"}',            # 6 bad value
        '{"prompt": "x", "seed": true}',                  # 7 bad value (a bool is not a seed)
        '["x"]',                                          # 8 not an object (read as a plain prompt: no brace)
        '{"seed": 2}',                                    # 9 no prompt
        '{"prompt": "   "}',                              # 10 empty prompt
        '{"prompt": "y", "steps": 3, "height": 32}',      # 11 fine
        '{"prompt": "x", "seed": 18446744073709551616}',  # 12 2^64: beyond what a generator takes
        '{"prompt": "z", "seed": 18446744073709551615}',  # 13 2^64 - 1: fine
    ]) + "\n")
    entries, problems = read_prompts(path)
    assert [n for n, _ in entries] == [1, 8, 11, 13]
    assert entries[2][1] == {"prompt": "y", "steps": 3, "height": 32}
    expected = {2: "empty line", 3: "invalid JSON", 4: "unknown setting(s) ['colour']", 5: "frames must be an integer",
                6: "guidance must be a finite number", 7: "seed must be an integer", 9: 'no "prompt"',
                10: "prompt must be a non-empty string", 12: "seed must be an integer in [0, 18446744073709551615]"}
    assert len(problems) == len(expected)
    for problem, (line, words) in zip(problems, expected.items()):
        assert problem.startswith(f"{path}:{line}: ") and words in problem, problem


def job(prompt, seed=0, frames=2, scheduler="dpm++", line=1):
    return Job(line, prompt, None, seed, frames, 2, 9.0, 64, 64, "tiny", scheduler)


def test_names_are_stable_and_calls_group_shared_settings():
    a, b, c = job("a red circle!", 0), job("a red circle!", 1), job("a blue one", 0, frames=3)
    assert a.stem == job("a red circle!", 0, line=7).stem  # the line number is not part of the video
    assert a.stem.startswith("a-red-circle-") and len({a.stem, b.stem, c.stem}) == 3
    assert plan([a, c, b, a], batch_size=4) == [[a, b], [c]]  # same settings together; a duplicate once
    assert plan([a, b, c], batch_size=1) == [[a], [b], [c]]
    assert plan([job("p", s, scheduler="euler-a") for s in (0, 1)], 4) == [[job("p", 0, scheduler="euler-a")],
                                                                         [job("p", 1, scheduler="euler-a")]]


def test_a_video_does_not_depend_on_its_batch_mates():
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    together = generate(pipe, [job("a red circle", 5), job("a blue square", 6), job("a cat", 7)])
    alone = generate(pipe, [job("a blue square", 6)])
    # float32; a batch of 3 and of 1 may take different kernel blockings: rounding only (~1e-6)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)
    single = pipe("a blue square", num_frames=2, num_inference_steps=2, generator=torch.Generator().manual_seed(6),
                  output_type="pt").frames  # what python -m t2vlab "a blue square" --seed 6 makes
    torch.testing.assert_close(alone, single, rtol=0, atol=0)


def test_one_run_writes_each_video_with_its_sidecar_and_a_rerun_skips_them(tiny, tmp_path, capsys):
    path, out = write_prompts(tmp_path), tmp_path / "out"
    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), *OPTIONS]) == 0
    names = videos(out)
    assert len(names) == 4
    sidecars = [json.loads((out / n.replace(".mp4", ".json")).read_text()) for n in names]
    by_line = {s["line"]: s for s in sidecars}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert by_line[3]["seed"] == 3 and by_line[2]["seed"] == 0 and by_line[4]["frames"] == 3
    assert by_line[2]["prompt"] == "a red circle moving left" and by_line[2]["steps"] == 2
    assert "wrote 4, skipped 0" in capsys.readouterr().out
    before = {n: (out / n).stat().st_mtime_ns for n in names}

    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), *OPTIONS]) == 0
    assert "wrote 0, skipped 4" in capsys.readouterr().out
    assert {n: (out / n).stat().st_mtime_ns for n in names} == before
    assert not atomic.leftovers(out) and [p.name for p in out.glob(".*")] == [atomic.MARKER]  # no temporary file


def test_an_interrupted_sidecar_leaves_the_old_one_and_nothing_else(tmp_path, monkeypatch):
    job = Job(line=1, prompt="a red circle", negative=None, seed=0, frames=2, steps=2, guidance=9.0, height=64,
              width=64, model="tiny", scheduler="ddim")
    monkeypatch.setattr(batch, "export_to_video", lambda frames, path, **kw: open(path, "wb").close())  # no ffmpeg
    atomic.mark_folder(tmp_path)  # a folder batch made: an interrupted job's files may be replaced there
    batch.write(tmp_path, job, None, fps=8, seconds=1.0)
    sidecar = tmp_path / f"{job.stem}.json"
    old = sidecar.read_bytes()
    assert json.loads(old)["prompt"] == "a red circle"
    monkeypatch.setattr(Path, "write_bytes", fails_half_way(0))
    with pytest.raises(OSError, match="injected"):
        batch.write(tmp_path, job, None, fps=8, seconds=2.0)
    assert sidecar.read_bytes() == old and not atomic.leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [atomic.MARKER, f"{job.stem}.json", f"{job.stem}.mp4"]


def test_a_failing_prompt_is_reported_and_the_rest_go_on(tiny, tmp_path, capsys, monkeypatch):
    path = write_prompts(tmp_path, 'one\n{"prompt": "fails"}\nthree\n\n')
    out = tmp_path / "out"
    real = TextToVideoPipeline.__call__

    def fail_on_its_prompt(self, prompt, **kw):
        if "fails" in prompt:
            raise RuntimeError("out of luck")
        return real(self, prompt, **kw)

    monkeypatch.setattr(TextToVideoPipeline, "__call__", fail_on_its_prompt)
    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), "--batch-size", "3", *OPTIONS]) == 1
    said = capsys.readouterr()
    assert "line 2 ('fails') failed: RuntimeError: out of luck" in said.err  # alone, after its call failed
    assert f"{path}:4: empty line" in said.err
    assert "wrote 2, skipped 0 already done, 1 failed" in said.out and len(videos(out)) == 2


def test_every_setting_is_checked_before_the_first_video(tiny, tmp_path, capsys, monkeypatch):
    """A bad value on the command line stops the run before the model loads (--fps 0 was found after generating;
    --steps 0 silently became the checkpoint's 25); a line whose completed settings the pipeline would refuse is
    reported as a bad line, before the first video, and the rest run."""
    path = write_prompts(tmp_path, 'one\n{"prompt": "odd size", "height": 60}\n{"prompt": "long", "frames": 5000}\n')
    for flag, value in (("--fps", "0"), ("--steps", "0"), ("--frames", "0"), ("--size", "0"), ("--seed", str(2**64)),
                        ("--guidance", "nan"), ("--batch-size", "0")):
        with pytest.raises(SystemExit) as e:
            main(["batch", str(path), "--out", str(tmp_path / "o"), "--model", str(tiny), flag, value])
        assert e.value.code == 2 and f"argument {flag}: " in capsys.readouterr().err
    calls = []
    real = TextToVideoPipeline.__call__

    def counted(self, *a, **kw):
        calls.append(capsys.readouterr().err)  # what was reported before this video
        return real(self, *a, **kw)

    monkeypatch.setattr(TextToVideoPipeline, "__call__", counted)
    assert main(["batch", str(path), "--out", str(tmp_path / "o"), "--model", str(tiny), *OPTIONS]) == 1
    (before_first,) = calls
    assert f"{path}:2: height must be divisible by 8" in before_first
    assert f"{path}:3: num_frames=5000 is beyond" in before_first and len(videos(tmp_path / "o")) == 1


def test_a_prompts_file_with_a_byte_order_mark_keeps_its_first_json_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes('{"prompt": "a blue square", "seed": 3}\nsecond\n'.encode("utf-8-sig"))  # Notepad's UTF-8
    entries, problems = read_prompts(path)
    assert problems == [] and entries == [(1, {"prompt": "a blue square", "seed": 3}), (2, {"prompt": "second"})]


def test_a_prompts_file_that_is_not_utf8_is_named_before_the_model_loads(tmp_path, capsys, monkeypatch):
    path = tmp_path / "prompts.txt"
    path.write_bytes("un cercle rouge, été\n".encode("latin-1"))
    monkeypatch.setattr("t2vlab.__main__.load", lambda *a: pytest.fail("the model was loaded first"))
    assert main(["batch", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not UTF-8 text (byte 0xe9 at position 17" in err and "Traceback" not in err


def test_an_existing_folder_of_someone_elses_gets_new_files_but_none_replaced(tiny, tmp_path, capsys):
    path = write_prompts(tmp_path, "one\n")
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), *OPTIONS]) == 0
    (name,) = videos(out)
    (out / name.replace(".mp4", ".json")).unlink()  # as if interrupted between the video and its sidecar
    (out / name).write_bytes(b"someone's own file of that name")
    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), *OPTIONS]) == 1
    assert "exists in a folder t2vlab did not write" in capsys.readouterr().err
    assert (out / name).read_bytes() == b"someone's own file of that name"
    assert not atomic.written_by_t2vlab(out) and (out / "notes.txt").read_text() == "mine"


def test_a_rerun_removes_what_a_killed_run_left_and_keeps_a_live_writers_files(tiny, tmp_path):
    path = write_prompts(tmp_path, "one\n")
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    out.mkdir()
    dead = out / f".x.mp4{atomic.PARTIAL}{child.pid}@{atomic._host()}~a.mp4"  # kill -9 while encoding
    live = out / f".y.mp4{atomic.PARTIAL}{os.getppid()}@{atomic._host()}~a.mp4"  # a concurrent batch, still encoding
    for p in (dead, live):
        p.write_bytes(b"half a video")
    assert main(["batch", str(path), "--out", str(out), "--model", str(tiny), *OPTIONS]) == 0
    assert not dead.exists() and live.exists() and len(videos(out)) == 1


def test_two_processes_write_the_same_videos_as_one_each_once(tiny, tmp_path, capsys):
    path = write_prompts(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes below: the same reductions in the same order, the same bytes
    try:
        assert main(["batch", str(path), "--out", str(one), "--model", str(tiny), "--batch-size", "1", *OPTIONS]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        # --multi_gpu is accelerate's torchrun launcher: on a machine without a GPU it starts CPU processes (gloo);
        # "--cpu --num_processes 2" would start only one process (accelerate 1.15 needs MPI for several)
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
         str(free_port()), "-m", "t2vlab", "batch", str(path),
         "--out", str(two), "--model", str(tiny), "--batch-size", "1", *OPTIONS],
        capture_output=True, text=True, env=env, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    said = launched.stdout
    assert "[process 0/2]: wrote 2" in said and "[process 1/2]: wrote 2" in said  # 4 calls dealt 2 + 2: each once
    assert videos(two) == videos(one)
    for name in videos(one):  # same call, same numbers, same encoder: the same file
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
