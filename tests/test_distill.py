"""Consistency distillation (t2vlab.distill, ``python -m t2vlab distill``): it runs on the tiny checkpoint, an
interrupted run resumed from its training states equals an uninterrupted one, the pieces of one step (the skip
schedule, c_skip / c_out, the teacher's guided DDIM step, the boundary condition, the loss, the EMA) equal their
formulas written out by hand, and the shipped toy student at 4 LCM steps reads better than its teacher at 4 steps.

Tolerances: one process on the CPU repeats the same float32 arithmetic in the same order, so a resumed run must
give the uninterrupted LoRA exactly; the formulas by hand are the same float32 operations in another grouping
(1e-6 relative: a few roundings of values of order 1).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from t2vlab import TextToVideoPipeline
from t2vlab import distill as ds
from t2vlab import finetune as ft
from t2vlab.schedulers import DDPMScheduler
from t2vlab.toy.evaluate import evaluate
from tests.helpers import interrupt_at_step

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["--model", "tiny", "--frames", "4", "--size", "32", "--toy-clips", "4", "--lora-rank", "4", "--lr", "1e-2",
        "--batch-size", "2", "--quiet"]


def run(out, *extra):
    return ds.main(["--out", str(out), *ARGS, *extra])


def test_distill_runs_and_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    assert run(tmp_path / "whole", "--steps", "5", "--state-every", "2") == 0
    out = tmp_path / "whole"
    assert [p.name for p in ft.training_states(out)] == ["state-0000004", "state-0000005"]
    state = ft.training_states(out)[-1]  # both adapters are in a state: the student and its EMA target
    assert {p.name for p in state.glob("lora-*")} == {"lora-student.safetensors", "lora-target.safetensors"}
    assert len((out / "log.jsonl").read_text().splitlines()) == 5 and (out / "loss.png").is_file()
    record = json.loads((out / "training.json").read_text())
    assert record["recommended"]["scheduler"] == "lcm-upper" and record["recommended"]["num_inference_steps"] == 4
    assert record["command"].startswith("python -m t2vlab distill --out") and record["steps"] == 5
    assert record["teacher_guidance_scale"] == 9.0  # the tiny checkpoint's recommended guidance, as none was given
    assert len(list((out / "toy-clips-4-seed0").glob("clip*.txt"))) == 4  # the toy world's clips, as finetune reads
    student = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in student.items())  # it learned
    target = load_file(str(state / "lora-target.safetensors"))
    assert any(not torch.equal(v, student["unet." + k]) for k, v in target.items())  # the EMA lags the student

    draws = interrupt_at_step(monkeypatch, 3)  # Ctrl-C in the middle of step 3: state 2 is the last one
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", "--steps", "5", "--state-every", "2")
    monkeypatch.setattr(ft, "step_draws", draws)
    assert run(tmp_path / "cut", "--steps", "5", "--state-every", "2") == 2  # needs --resume
    assert run(tmp_path / "cut", "--steps", "5", "--state-every", "2", "--resume") == 0
    resumed = load_file(str(tmp_path / "cut" / "pytorch_lora_weights.safetensors"))
    assert len(json.loads((tmp_path / "cut" / "training.json").read_text())["runs"]) == 1  # the cut run wrote none
    assert set(student) == set(resumed)
    for k in student:
        assert torch.equal(student[k], resumed[k]), k
    for name in ("lora-student.safetensors", "lora-target.safetensors"):  # the EMA continued exactly too
        a, b = load_file(str(state / name)), load_file(str(ft.training_states(tmp_path / "cut")[-1] / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert run(tmp_path / "whole", "--steps", "6", "--state-every", "2", "--resume") == 0  # a finished run, longer
    runs = json.loads((out / "training.json").read_text())
    assert [(r["from_step"], r["to_step"]) for r in runs["runs"]] == [(0, 5), (5, 6)] and runs["steps"] == 6
    assert runs["wall_seconds"] == round(sum(r["wall_seconds"] for r in runs["runs"]), 1)
    assert runs["command"].endswith("--state-every 2")  # the first run's


def test_a_resume_with_other_distillation_settings_is_refused_naming_them(tmp_path, capsys):
    assert run(tmp_path / "out", "--steps", "1", "--state-every", "1") == 0
    capsys.readouterr()
    assert run(tmp_path / "out", "--steps", "2", "--resume", "--guidance-scale", "5", "--ema-decay", "0.5") == 2
    err = capsys.readouterr().err
    assert "--guidance-scale None there, 5.0 now" in err and "--ema-decay 0.95 there, 0.5 now" in err, err


def test_bad_settings_are_refused_by_name(tmp_path, capsys):
    for flag, value in (("--ema-decay", "1"), ("--huber-c", "0"), ("--guidance-scale", "0.5"), ("--lr", "0")):
        with pytest.raises(SystemExit):
            ds.parse_args(["--out", str(tmp_path), flag, value])
        assert flag in capsys.readouterr().err


@pytest.fixture(scope="module")
def step(tiny):
    """A ConsistencyDistillation on the tiny UNet with a student and a target adapter that differ, and a batch."""
    pipe = TextToVideoPipeline.from_pretrained(tiny)
    unet = pipe.unet.requires_grad_(False).eval()
    g = torch.Generator().manual_seed(0)
    args = ds.parse_args(["--out", "unused", "--lora-rank", "4"])
    ds.add_student_and_target(unet, args)
    with torch.no_grad():  # B starts at zero: give both adapters values, different ones
        for name in (ds.STUDENT, ds.TARGET):
            for v in ds.lora_state_dict(unet, name).values():
                v.copy_(0.1 * torch.randn(v.shape, generator=g))
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    module = ds.ConsistencyDistillation(unet, scheduler.alphas_cumprod, 50, guidance_scale=7.0, timestep_scaling=10.0)
    d = unet.config.cross_attention_dim
    batch = {"x0": torch.randn(3, 4, 2, 4, 4, generator=g), "noise": torch.randn(3, 4, 2, 4, 4, generator=g),
             "j": torch.tensor([0, 20, 49]), "text": torch.randn(3, 8, d, generator=g),
             "empty": torch.randn(1, 8, d, generator=g)}
    return module, scheduler.alphas_cumprod, batch


def test_the_skip_schedule_and_the_boundary_scalings_equal_their_formulas(step):
    module, _, b = step
    t, k = ds.skip_schedule(1000, 50)
    assert k == 20 and t[:3].tolist() == [19, 39, 59] and t[-1] == 999 and len(t) == 50
    start, end = module.pair(b["j"])  # t_{n+k} = t_j, t_n = max(t_j - k, 0)
    assert start.tolist() == [19, 419, 999] and end.tolist() == [0, 399, 979]
    for t in (0, 19, 399, 999):  # c_skip = s^2 / ((10 t)^2 + s^2), c_out = 10 t / sqrt((10 t)^2 + s^2), s = 0.5
        c_skip, c_out = ds.boundary_scalings(torch.tensor(float(t)), 10.0)
        assert math.isclose(c_skip.item(), 0.25 / ((10 * t) ** 2 + 0.25), rel_tol=1e-6)
        assert math.isclose(c_out.item(), 10 * t / math.sqrt((10 * t) ** 2 + 0.25), rel_tol=1e-6, abs_tol=0)


def test_the_teacher_step_and_the_target_equal_the_guided_ddim_step_and_consistency_function_by_hand(step):
    module, abar, b = step
    unet, w = module.unet, 7.0
    start, end = module.pair(b["j"])
    x = module.noisy(b["x0"], b["noise"], b["j"], start)
    a_s = abar[start].reshape(-1, 1, 1, 1, 1)
    assert torch.equal(x[2], b["noise"][2])  # at t_N = 999 the input is pure noise, as sampling starts
    assert torch.allclose(x[:2], (a_s.sqrt() * b["x0"] + (1 - a_s).sqrt() * b["noise"])[:2], rtol=1e-6, atol=1e-7)

    ds.set_active(unet, [])  # the teacher: no adapter
    with torch.no_grad():
        eps_c = unet(x, start, b["text"])
        eps_u = unet(x, start, b["empty"].expand_as(b["text"]))
    eps = eps_u + w * (eps_c - eps_u)  # classifier-free guidance at w
    x0 = (x - (1 - a_s).sqrt() * eps) / a_s.sqrt()  # DDIM, eta = 0, from t_{n+k} to t_n
    a_e = abar[end].reshape(-1, 1, 1, 1, 1)
    by_hand = a_e.sqrt() * x0 + (1 - a_e).sqrt() * eps
    x_hat = module.teacher_step(x, start, end, b["text"], b["empty"])
    assert torch.allclose(x_hat, by_hand, rtol=1e-5, atol=1e-6)

    target = module.target(x_hat, end, b["text"])
    ds.set_active(unet, [ds.TARGET])
    with torch.no_grad():
        eps_t = unet(x_hat, end, b["text"])
    c = (10 * end.double()).reshape(-1, 1, 1, 1, 1)
    c_skip, c_out = (0.25 / (c**2 + 0.25)).float(), (c / (c**2 + 0.25).sqrt()).float()
    f = c_skip * x_hat + c_out * (x_hat - (1 - a_e).sqrt() * eps_t) / a_e.sqrt()
    assert torch.allclose(target, f, rtol=1e-5, atol=1e-6)
    assert torch.equal(target[0], x_hat[0])  # t_n = 0: f(x, 0) = x exactly (c_skip = 1, c_out = 0)

    loss = module(b["x0"], b["noise"], b["j"], b["text"], b["empty"])  # the student against that target
    ds.set_active(unet, [ds.STUDENT])
    with torch.no_grad():
        eps_s = unet(x, start, b["text"])
    c = (10 * start.double()).reshape(-1, 1, 1, 1, 1)
    c_skip, c_out = (0.25 / (c**2 + 0.25)).float(), (c / (c**2 + 0.25).sqrt()).float()
    student = c_skip * x + c_out * (x - (1 - a_s).sqrt() * eps_s) / a_s.sqrt()
    huber = (((student - f) ** 2 + 0.001**2).sqrt() - 0.001).mean()
    assert math.isclose(loss.item(), huber.item(), rel_tol=1e-5)
    assert loss.requires_grad  # the gradient flows into the student ...
    loss.backward()
    grads = {name: [p.grad for n, p in unet.named_parameters() if f".{name}." in n] for name in (ds.STUDENT, ds.TARGET)}
    assert any(g is not None and g.abs().max() > 0 for g in grads[ds.STUDENT])
    assert all(g is None for g in grads[ds.TARGET])  # ... never into the target
    unet.zero_grad(set_to_none=True)


def test_the_ema_and_the_pseudo_huber_loss_equal_their_formulas():
    g = torch.Generator().manual_seed(1)
    online = {"a": torch.randn(3, generator=g), "b": torch.randn(2, 2, generator=g)}
    target = {k: torch.randn(v.shape, generator=g) for k, v in online.items()}
    want = {k: 0.9 * target[k] + 0.1 * online[k] for k in online}
    ds.ema_update(target, online, 0.9)
    assert all(torch.allclose(target[k], want[k], rtol=1e-6, atol=1e-7) for k in online)
    a, b = torch.randn(10, generator=g), torch.randn(10, generator=g)
    assert math.isclose(ds.pseudo_huber(a, b, 0.1).item(), (((a - b) ** 2 + 0.01).sqrt() - 0.1).mean().item(),
                        rel_tol=1e-6)


def test_the_shipped_student_loads_and_at_4_lcm_steps_beats_the_teacher_at_4_steps():
    pipe = TextToVideoPipeline.from_pretrained("toy")
    # all 48 captions, seed 0: evaluate draws the noise of a batch from one generator, so a subset of the captions
    # would be other videos (teacher 100% colour / 85% direction; student 98% / 100% at its lcm-upper timesteps)
    _, teacher, _ = evaluate(pipe, seeds=(0,), steps=4)
    settings = ds.load_distilled(pipe)
    assert settings["num_inference_steps"] == 4 and settings["guidance_scale"] == 1.0
    assert type(pipe.scheduler).__name__ == "LCMScheduler" and pipe.get_list_adapters()["unet"] == ["lcm"]
    pipe.scheduler.set_timesteps(4)  # its training.json's "lcm-upper": the student reads its colour best there
    assert pipe.scheduler.timesteps.tolist() == [999, 799, 599, 399]
    _, student, _ = evaluate(pipe, seeds=(0,), steps=4, guidance_scale=1.0, scheduler=None)
    right = {who: s["all"]["colour"] + s["all"]["direction"] for who, s in (("teacher", teacher), ("student", student))}
    assert right["student"] > right["teacher"], right
