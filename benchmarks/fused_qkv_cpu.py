"""Does ``fuse_qkv_projections`` pay on the CPU? Fused against three projections, interleaved, same weights.

1. single attention layers at the published widths, for a 256x256 video of 8 frames under guidance (batch 2):
   spatial self-attention at the first level (320 wide, 32x32 = 1024 tokens a frame) and at the deepest
   (1280 wide, 4x4 = 16 tokens), cross-attention at the first level (keys and values from 77 tokens x 1024),
   temporal attention at the first level (8 tokens, one sequence per pixel: batch 2 x 1024); and the deepest
   level's projections alone (three matmuls against one three times as wide), which says where time goes;
2. the whole UNet at full width (the published config, 1.41 B parameters, random weights), batch 2, 8 frames of
   64x64 pixels (8x8 latents), float32, as benchmarks/unet_cpu.py runs it.

Timings alternate fused and unfused so that background load hits both alike; the table gives medians and the
fused / unfused ratio (below 1: fusing pays).

    python -m benchmarks.fused_qkv_cpu [--repeats 7] [--threads 1] [--skip-unet]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import print_table, time_call


def attention_cases():
    """(name, Attention, x, context) at the published widths (heads of 64, as ms-1.7b's)."""
    from t2vlab.attention import Attention

    g = torch.Generator().manual_seed(0)

    def layer(dim, cross=None):
        m = Attention(dim, heads=dim // 64, dim_head=64, cross_attention_dim=cross).eval()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02, generator=g)
        return m

    frames, videos = 8, 2
    return [
        ("spatial self, level 0 (320 wide, 1024 tokens x 16)", layer(320), torch.randn(videos * frames, 1024, 320,
                                                                                      generator=g), None),
        ("spatial self, level 3 (1280 wide, 16 tokens x 16)", layer(1280), torch.randn(videos * frames, 16, 1280,
                                                                                      generator=g), None),
        ("cross, level 0 (q 1024 tokens x 16, k/v 77 x 2)", layer(320, 1024),
         torch.randn(videos * frames, 1024, 320, generator=g), torch.randn(videos, 77, 1024, generator=g)),
        ("temporal, level 0 (320 wide, 8 tokens x 2048)", layer(320), torch.randn(videos * 1024, frames, 320,
                                                                                  generator=g), None),
    ]


def projections_alone(repeats):
    """The deepest level's q, k, v projections only: three (256 x 1280) @ (1280 x 1280) matmuls, or one
    (256 x 1280) @ (1280 x 3840)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 16, 1280, generator=g)
    weights = [torch.randn(1280, 1280, generator=g) * 0.02 for _ in range(3)]
    fused = torch.cat(weights)
    mode = {"fused": False}

    def run():
        with torch.no_grad():
            return F.linear(x, fused) if mode["fused"] else [F.linear(x, w) for w in weights]

    t_plain, t_fused = interleaved(run, lambda: mode.update(fused=True), lambda: mode.update(fused=False), repeats)
    diff = ((F.linear(x, fused) - torch.cat([F.linear(x, w) for w in weights], -1)).abs().max()).item()
    return ["the level-3 projections alone (3 matmuls / 1)", f"{t_plain * 1e3:.1f}", f"{t_fused * 1e3:.1f}",
            f"{t_fused / t_plain:.2f}", f"{diff:.1e} abs"]


def full_unet():
    from t2vlab import UNet3DConditionModel, configs

    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config(configs.UNET)
    unet = unet.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.02, generator=g)
    return unet


def interleaved(run, fuse, unfuse, repeats):
    """Median seconds of ``run()`` unfused and fused, alternating, after one warm-up call each."""
    times = {"unfused": [], "fused": []}
    for switch in (unfuse, fuse):
        switch()
        time_call(run, repeats=1, warmup=0)
    for _ in range(repeats):
        for name, switch in (("unfused", unfuse), ("fused", fuse)):
            switch()
            times[name].append(time_call(run, repeats=1, warmup=0))
    return statistics.median(times["unfused"]), statistics.median(times["fused"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-unet", action="store_true", help="only the single layers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, m, x, context in attention_cases():
        with torch.no_grad():
            plain = m(x, context)
            m.fuse_projections()
            diff = ((m(x, context) - plain).abs().max() / plain.abs().max()).item()
        def run(m=m, x=x, context=context):
            with torch.no_grad():
                return m(x, context)

        t_plain, t_fused = interleaved(run, m.fuse_projections, m.unfuse_projections, args.repeats)
        rows.append([name, f"{t_plain * 1e3:.1f}", f"{t_fused * 1e3:.1f}", f"{t_fused / t_plain:.2f}", f"{diff:.1e}"])
    rows.append(projections_alone(args.repeats))
    if not args.skip_unet:
        unet = full_unet()
        x = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(1))
        text = torch.randn(2, 77, 1024, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([500, 500])

        def run_unet():
            with torch.no_grad():
                return unet(x, t, text)

        plain = run_unet()
        unet.fuse_qkv_projections()
        diff = ((run_unet() - plain).abs().max() / plain.abs().max()).item()
        t_plain, t_fused = interleaved(run_unet, unet.fuse_qkv_projections, unet.unfuse_qkv_projections,
                                       args.repeats)
        rows.append(["whole UNet, full width (batch 2, 8 frames, 8x8 latents)", f"{t_plain * 1e3:.0f}",
                     f"{t_fused * 1e3:.0f}", f"{t_fused / t_plain:.2f}", f"{diff:.1e}"])
    print(f"fuse_qkv_projections on the CPU: float32, {torch.get_num_threads()} thread(s), median of "
          f"{args.repeats} interleaved runs")
    print_table(["case", "unfused ms", "fused ms", "fused / unfused", "relative difference"], rows)


if __name__ == "__main__":
    main()
