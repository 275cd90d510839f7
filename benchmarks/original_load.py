"""Loading the original ModelScope layout against its converted copy (issue 18), on CPU.

Writes a mid-size checkpoint in the original layout (t2vlab.original.write_original; the real
architecture with narrower layers, random weights N(0, 0.02)) twice: with a VQGAN file holding only
tensors (read by ``torch.load(weights_only=True, mmap=True)``), and as a Lightning training checkpoint
does (the rest of a latent-diffusion model, 200 MB of tensors the loader must skip, and a callback
object that weights_only refuses, so the restricted unpickler reads it). Converts the first once
(``convert_original``, timed), then loads each folder with ``TextToVideoPipeline.from_pretrained`` in a
fresh subprocess, in turn, ``--repeats`` times each; medians of the load time and of the extra peak
resident memory of the load (benchmarks.common.peak_memory). The files stay in the page cache between
runs, so the times compare the work of reading and converting, not the disk.

    python -m benchmarks.original_load [--unet-channels 64] [--text-width 512] [--repeats 3] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import mib, peak_memory, print_table, randomize_  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from benchmarks.common import peak_memory
from t2vlab import TextToVideoPipeline
import transformers  # imported before timing: both layouts need it for the tokenizer
out = {{}}
def load():
    t0 = time.perf_counter()
    out["pipe"] = TextToVideoPipeline.from_pretrained({folder!r})
    out["s"] = time.perf_counter() - t0
mem = peak_memory(load)
print(json.dumps({{"s": out["s"], "peak": mem}}))
"""


def build(unet_channels, text_width, text_blocks):
    from t2vlab.text_encoder import CLIPTextEncoder
    from t2vlab.unet import UNet3DConditionModel
    from t2vlab.vae import AutoencoderKL

    c = unet_channels
    configs = {
        "unet": (UNet3DConditionModel, dict(block_out_channels=(c, 2 * c, 4 * c, 4 * c), cross_attention_dim=text_width,
                                            attention_head_dim=32)),
        "vae": (AutoencoderKL, dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                                    down_block_types=("DownEncoderBlock2D",) * 4,
                                    up_block_types=("UpDecoderBlock2D",) * 4)),
        "text_encoder": (CLIPTextEncoder, dict(hidden_size=text_width, intermediate_size=4 * text_width,
                                               num_hidden_layers=text_blocks, num_attention_heads=text_width // 64)),
    }
    models = {}
    for i, (name, (cls, cfg)) in enumerate(configs.items()):
        with torch.device("meta"):
            model = cls.from_config(cfg)
        models[name] = randomize_(model.to_empty(device="cpu"), seed=i)
    return models


class ModelCheckpoint:
    """Stands for a Lightning callback pickled into a training checkpoint: weights_only refuses it."""

    def __init__(self, monitor):
        self.monitor = monitor


def child_load(folder):
    code = CHILD.format(root=str(ROOT), folder=str(folder))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet-channels", type=int, default=64, help="the UNet's first level width (published: 320)")
    ap.add_argument("--text-width", type=int, default=512, help="the text tower's width (published: 1024)")
    ap.add_argument("--text-blocks", type=int, default=8, help="text blocks the encoder runs (published: 23)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmp", default=None, help="folder for the checkpoints (default: a temporary one)")
    args = ap.parse_args(argv)

    from t2vlab.original import convert_original, write_original

    root = Path(tempfile.mkdtemp(prefix="t2vlab-orig-", dir=args.tmp))
    try:
        models = build(args.unet_channels, args.text_width, args.text_blocks)
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        original = write_original(root / "original", models)
        lightning = write_original(root / "original-lightning", models, extra_vae_state={
            "model.diffusion_model.rest": torch.zeros(50 * 2**20)},  # 200 MB that is not the autoencoder
            extra_vae_checkpoint={"callbacks": {"ModelCheckpoint": ModelCheckpoint("val/loss")}, "epoch": 7})
        del models
        converted = root / "converted"
        t0 = time.perf_counter()
        convert_peak = peak_memory(lambda: convert_original(original, converted, progress=False))
        convert_s = time.perf_counter() - t0
        folders = {"original": original, "original, Lightning-style VQGAN": lightning, "converted": converted}
        size = {name: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                for name, folder in folders.items()}
        runs = {name: [] for name in folders}
        for _ in range(args.repeats):
            for name, folder in folders.items():
                runs[name].append(child_load(folder))
        print(f"parameters: UNet {params['unet'] / 1e6:.1f} M, VAE {params['vae'] / 1e6:.1f} M, "
              f"text encoder {params['text_encoder'] / 1e6:.1f} M (float32); torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        rows = []
        for name in folders:
            s = statistics.median(r["s"] for r in runs[name])
            peak = statistics.median(r["peak"] for r in runs[name])
            rows.append([name, mib(size[name]), f"{s:.2f}", mib(peak),
                         " ".join(f"{r['s']:.2f}" for r in runs[name])])
        print_table(["layout", "files MiB", "load s (median)", "extra peak MiB (median)", "all runs s"], rows,
                    title="TextToVideoPipeline.from_pretrained, fresh process each run")
        print(f"\nconvert_original: {convert_s:.2f} s, extra peak {mib(convert_peak)} MiB "
              f"(largest component, the UNet: {mib(params['unet'] * 4)} MiB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
