"""Motion only (t2vlab.motion_director, ``finetune --train motion``): the appearance-debiased loss, which
adapter each path trains, and the trainer keeping the temporal LoRA alone.

Tolerances: gradients compared between two computations of the same float32 sums in the same order are
equal to 1e-6 relative (the summed loss adds the two paths' gradients, a rounding of the last bit)."""

from __future__ import annotations

import math

import pytest
import torch

from t2vlab import TextToVideoPipeline
from t2vlab import finetune as ft
from t2vlab.lora import lora_layers, set_active, set_frozen
from t2vlab.motion_director import APPEARANCE, MOTION, DualPath, add_adapters, debias, temporal_loss
from tests.helpers import randomize_, rel_err
from tests.test_finetune import ARGS, lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_debias_is_the_formula_frame_by_frame():
    x, anchor = torch.randn(2, 3, 5, 4, 4), torch.tensor([1, 4])
    got = debias(x, anchor, beta=0.5)
    for b in range(2):
        for f in range(5):
            want = math.sqrt(1.25) * x[b, :, f] - 0.5 * x[b, :, anchor[b]]
            assert torch.allclose(got[b, :, f], want, rtol=1e-6, atol=1e-7)


def test_an_error_all_frames_share_weighs_less_than_one_that_moves():
    """What 'appearance-debiased' means: an error the same in every frame (appearance) keeps (sqrt(2) - 1)^2
    of its weight in the debiased part; an error of zero mean across frames (motion) keeps more than all."""
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(4, 4, 1, 8, 8, generator=g).expand(4, 4, 8, 8, 8)
    anchor = torch.randint(8, (4,), generator=g)
    zero = torch.zeros_like(shared)
    plain = shared.pow(2).mean()
    assert torch.allclose(temporal_loss(shared, zero, anchor), plain * (1 + (math.sqrt(2) - 1) ** 2), rtol=1e-5)
    moving = torch.randn(4, 4, 8, 8, 8, generator=g)
    assert temporal_loss(moving, zero, anchor) > 2 * moving.pow(2).mean()


@pytest.fixture(scope="module")
def unet():
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    randomize_(pipe.unet, seed=3)
    torch.manual_seed(0)
    add_adapters(pipe.unet, rank=2)
    with torch.no_grad():  # B starts at zero, which would leave A without a gradient: give it values
        for layer in lora_layers(pipe.unet).values():
            for name in layer.lora_B:
                layer.lora_B[name].weight.normal_(0, 0.1)
    return pipe.unet.requires_grad_(False)


def grads(unet, loss_fn):
    params = {f"{p}.{n}": layer.lora_A[n].weight for p, layer in lora_layers(unet).items() for n in layer.lora_A}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    loss_fn().backward()
    out = {k: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for k, p in params.items()}
    for p in params.values():
        p.requires_grad_(False)
    return out


def test_each_path_trains_its_own_adapter(unet):
    g = torch.Generator().manual_seed(1)
    x_t, noise = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    t, text = torch.tensor([10, 500]), torch.randn(2, 77, 32, generator=g)
    frame, anchor = torch.tensor([2, 0]), torch.tensor([1, 2])
    both = grads(unet, lambda: DualPath(unet)(x_t, t, text, noise, frame, anchor))

    def appearance_path():
        set_active(unet, [APPEARANCE])
        rows = torch.arange(2)
        pred = unet(x_t[rows, :, frame][:, :, None], t, text)
        return torch.nn.functional.mse_loss(pred, noise[rows, :, frame][:, :, None])

    def motion_path():  # both adapters act; only the temporal one may learn from it
        set_active(unet, [APPEARANCE, MOTION])
        set_frozen(unet, [APPEARANCE])
        try:
            return temporal_loss(unet(x_t, t, text), noise, anchor)
        finally:
            set_frozen(unet, [])

    alone = grads(unet, appearance_path)
    moving = grads(unet, motion_path)
    spatial = [k for k in both if k.endswith(APPEARANCE)]
    temporal = [k for k in both if k.endswith(MOTION)]
    assert spatial and temporal
    assert all(moving[k].abs().max() == 0 for k in spatial)  # the motion path teaches appearance nothing
    assert all(alone[k].abs().max() == 0 for k in temporal)  # the appearance path teaches motion nothing
    assert max(rel_err(both[k], alone[k]) for k in spatial) <= 1e-6
    assert max(rel_err(both[k], moving[k]) for k in temporal) <= 1e-6
    assert min(moving[k].abs().max() for k in temporal) > 0 and min(alone[k].abs().max() for k in spatial) > 0


def test_the_trainer_keeps_the_temporal_lora_alone_and_resumes_exactly(clips, tmp_path, monkeypatch):
    def run(out, *extra):
        return ft.main(["--data", str(clips), "--out", str(out), *ARGS, "--train", "motion", "--steps", "3",
                        "--state-every", "1", *extra])

    assert run(tmp_path / "whole") == 0
    kept, appearance = lora(tmp_path / "whole"), lora(tmp_path / "whole", ft.APPEARANCE_WEIGHT_NAME)
    assert kept and all(".temp_attentions." in k or k.startswith("unet.transformer_in.") for k in kept)
    assert appearance and all(".attentions." in k and ".temp_attentions." not in k for k in appearance)
    for weights in (kept, appearance):  # both trained: B started at zero
        assert max(v.abs().max() for k, v in weights.items() if "lora_B" in k) > 0
    pipe = TextToVideoPipeline.from_pretrained("tiny")
    pipe.load_lora_weights(tmp_path / "whole", adapter_name="motion")  # the kept file is an ordinary LoRA

    draws = ft.step_draws

    def crash_at_step_2(step, *a):
        if step == 2:
            raise KeyboardInterrupt
        return draws(step, *a)

    monkeypatch.setattr(ft, "step_draws", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(ft, "step_draws", draws)
    assert run(tmp_path / "cut", "--resume") == 0
    for name in ("pytorch_lora_weights.safetensors", ft.APPEARANCE_WEIGHT_NAME):
        whole, resumed = lora(tmp_path / "whole", name), lora(tmp_path / "cut", name)
        assert set(whole) == set(resumed) and all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_gradient_checkpointing_is_refused_with_a_reason(clips, tmp_path, capsys):
    """Checkpointing reruns a forward during the backward pass, when DualPath has switched the adapters back:
    the rerun would not be the forward that was run, so the combination is an error, not wrong gradients."""
    with pytest.raises(SystemExit):
        ft.main(["--data", str(clips), "--out", str(tmp_path / "o"), *ARGS, "--train", "motion",
                 "--gradient-checkpointing"])
    assert "--gradient-checkpointing does not work with --train motion" in capsys.readouterr().err
