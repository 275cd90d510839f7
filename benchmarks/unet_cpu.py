"""Our UNet3DConditionModel beside diffusers' on the same full-width weights and inputs, on CPU.

Full width (the published config: 4 levels, 320..1280 channels, 1.41 B parameters, random
weights shared by both models), 8 frames of 64x64 pixels (8x8 latents), batch 2 as under
classifier-free guidance, float32. Prints time per call and extra peak memory per call.

    python benchmarks/unet_cpu.py [--frames 8] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import mib, peak_memory, print_table, time_call


def build_models():
    import diffusers

    from t2vlab import UNet3DConditionModel, configs

    cfg = configs.UNET
    with torch.device("meta"):
        ref = diffusers.UNet3DConditionModel.from_config(cfg)
        ours = UNet3DConditionModel.from_config(cfg)
    ref = ref.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.02, generator=g)
    ours.load_state_dict(ref.state_dict(), assign=True)  # the very same tensors: no second copy
    return ours.eval(), ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="pixels; latents are size/8")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    ours, ref = build_models()
    h = args.size // 8
    x = torch.randn(2, 4, args.frames, h, h)
    text = torch.randn(2, 77, 1024)
    t = torch.tensor([500, 500])

    def run_ours():
        with torch.no_grad():
            return ours(x, t, text)

    def run_ref():
        with torch.no_grad():
            return ref(x, t, text).sample

    err = ((run_ours() - run_ref()).abs().max() / run_ref().abs().max()).item()
    # interleave the timings so that background load hits both sides alike
    t_ref, t_ours = [], []
    for _ in range(args.repeats):
        t_ref.append(time_call(run_ref, repeats=1, warmup=0))
        t_ours.append(time_call(run_ours, repeats=1, warmup=0))
    t_ref, t_ours = sorted(t_ref)[len(t_ref) // 2], sorted(t_ours)[len(t_ours) // 2]
    m_ref, m_ours = peak_memory(run_ref), peak_memory(run_ours)
    print(f"UNet3D full width, batch 2, {args.frames} frames, {args.size}x{args.size} px, float32, "
          f"{torch.get_num_threads()} threads; relative difference of outputs {err:.1e}")
    print_table(["implementation", "s / call (median)", "extra peak MiB", "time ratio", "memory ratio"],
                [["diffusers 0.42.1", t_ref, mib(m_ref), "1.00", "1.00"],
                 ["t2vlab", t_ours, mib(m_ours), f"{t_ours / t_ref:.2f}", f"{m_ours / m_ref:.2f}"]])


if __name__ == "__main__":
    main()
