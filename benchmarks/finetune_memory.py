"""Peak memory and time of one LoRA training step (forward + backward) with and without gradient checkpointing.

    python -m benchmarks.finetune_memory [--frames 8] [--size 32] [--repeats 2]

A mid-size UNet of the published family (block_out_channels 64/128/256/256, two layers per level, 4.9x
fewer channels than ms-1.7b: 59 M parameters with the LoRA; random weights, memory does not depend on them), LoRA
rank 16 on the spatial and temporal attention, batch 1, float32 on the CPU. The step is what the trainer
runs: noise-prediction MSE, backward into the LoRA parameters only. Peak memory: benchmarks/common.py:
peak_memory (the resident high-water mark above the memory held before the step). On a GPU the same
comparison for the published model at 256x256 x 16 frames is the issue's aim (benchmarks/gpu.py).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import mib, peak_memory, print_table, time_call
from t2vlab import UNet3DConditionModel
from t2vlab.lora import add_lora, lora_targets

MID_UNET = dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, attention_head_dim=32,
                norm_num_groups=32, cross_attention_dim=256, sample_size=32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32, help="latent height and width (pixels / 8)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(MID_UNET).train()
    unet.requires_grad_(False)
    params = add_lora(unet, lora_targets(unet, "both"), rank=16)
    n_params = sum(p.numel() for p in unet.parameters())
    x = torch.randn(1, 4, args.frames, args.size, args.size)
    ctx, target = torch.randn(1, 77, 256), torch.randn_like(x)

    def step():
        loss = torch.nn.functional.mse_loss(unet(x, torch.tensor([500]), ctx), target)
        loss.backward()
        for p in params:
            p.grad = None

    rows = []
    for on in (False, True):
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()
        seconds = time_call(step, repeats=args.repeats, warmup=1)
        peaks = [peak_memory(step) for _ in range(args.repeats)]
        rows.append(["on" if on else "off", f"{seconds:.2f}", mib(min(peaks))])
    base = float(rows[0][2])
    for r in rows:
        r.append(f"{float(r[2]) / base:.2f}")
    print_table(["checkpointing", "s / step (median)", "extra peak MiB", "memory ratio"], rows,
                title=f"LoRA step, mid-size UNet ({n_params / 1e6:.0f} M parameters), {args.frames} frames of "
                      f"{args.size}x{args.size} latents, batch 1, float32, CPU")


if __name__ == "__main__":
    main()
