"""The compiled path: ``pipe.compile(mode=...)`` runs the UNet (and the VAE's decoder) through ``torch.compile``.

torch.compile traces a model's forward once per input shape (TorchDynamo), and hands the graph to a
backend: "inductor" (the default) writes fused kernels (C++ on the CPU, Triton on a GPU). The models of
this package trace as one graph each, without breaks (``tests/test_compiled.py`` holds that true), so
the whole UNet call is one compiled program.

- The first call at a new shape compiles (seconds to minutes): ``pipe.warm_up(height, width, num_frames)``
  makes that call on the generation's shapes and says how long it took, so the time is paid before the
  loop, and visibly.
- ``mode``: "default"; "reduce-overhead" adds CUDA graphs (on a GPU: one launch per UNet call, which
  helps when the kernels are small); "max-autotune" also tries kernel variants (longest compile).
  ``backend`` other than "inductor" ("aot_eager", "eager") traces without generating code: a quick
  check that the graph is whole and equal to eager.
- The modules stay the same objects (``nn.Module.compile`` compiles them in place): their parameters,
  names and switches are unchanged, and ``module.forward(...)`` still runs the eager code.
- A switch that changes the forward (FreeU, FreeNoise's windows, attention slicing) after compiling
  makes the next call recompile (torch.compile's guards notice), it does not give stale numbers.

Beside it, diffusers' other speed switch: ``pipe.fuse_qkv_projections()`` puts each attention's q, k and v
projections (k and v for cross-attention) into one matrix, one matmul instead of three, in the UNet and the VAE
(``t2vlab.attention.fuse_projections``); ``unfuse_qkv_projections()`` drops the fused copies. Whether it pays on
a CPU is measured in ``benchmarks/fused_qkv_cpu.py``.
"""

from __future__ import annotations

import time

import torch

from . import checks

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_module(module, mode="default", backend="inductor", fullgraph=True, dynamic=False):
    """Compile ``module``'s forward in place (``mode`` only means something to inductor)."""
    options = {"mode": mode} if backend == "inductor" else {}
    module.compile(backend=backend, fullgraph=fullgraph, dynamic=dynamic, **options)


def uncompile_module(module):
    """Back to the eager forward. ``nn.Module.compile`` keeps the compiled call in ``_compiled_call_impl``
    (PyTorch has no public undo); clearing it is what ``nn.Module.__call__`` checks."""
    module._compiled_call_impl = None


class CompiledPath:
    """Mixed into ``TextToVideoPipeline``; reads and sets only what its ``__init__`` declares (``compiled``,
    ``first_call_seconds``) and the models' own state."""

    def compile(self, mode="default", backend="inductor", vae=True, fullgraph=True, dynamic=False):
        """Compile the UNet (and, with ``vae``, the VAE's decoder) with ``torch.compile``.

        ``fullgraph=True`` makes a graph break an error instead of a silent slowdown. ``dynamic=False``
        compiles for the shapes in use (one compile per size; a new size compiles again).
        Call ``warm_up`` next to pay (and see) the compile before generating.
        """
        if self.unet.deepcache is not None:  # the UNet's hook point of DeepCache (t2vlab.techniques.deepcache)
            raise ValueError("compile: DeepCache is on; its step rule runs in Python between calls and would break "
                             "the graph: call pipe.disable_deepcache() first")
        checks.one_of("mode", mode, COMPILE_MODES)
        compile_module(self.unet, mode, backend, fullgraph, dynamic)
        vae = bool(vae) and self.vae is not None  # a pipeline without a VAE compiles the UNet only
        if vae:
            compile_module(self.vae.decoder, mode, backend, fullgraph, dynamic)
        self.compiled = {"mode": mode, "backend": backend, "vae": vae}
        return self

    def uncompile(self):
        """Back to the eager models (the compiled programs are dropped)."""
        uncompile_module(self.unet)
        if self.vae is not None:
            uncompile_module(self.vae.decoder)
        self.compiled = None
        return self

    def warm_up(self, height=None, width=None, num_frames=None, num_videos=1, guidance_scale=9.0):
        """One UNet call and one decode at a generation's shapes (defaults: ``recommended``), timed.

        With the compiled path the first call at a shape compiles; doing it here puts that time before
        the loop, where it is measured. Returns (and keeps in ``first_call_seconds``) {"unet": s, "vae": s}.
        ``guidance_scale`` > 1 doubles the UNet's batch (classifier-free guidance), as the loop does.
        """
        rec = self.recommended
        height, width = height or rec.height, width or rec.width
        num_frames = num_frames or rec.num_frames
        f, c = self.vae_scale_factor, self.unet.config.in_channels
        guided = self.classifier_free_guidance(guidance_scale)  # False for a UNet that embeds the guidance scale
        batch = num_videos * (2 if guided else 1)
        dtype, device = self.unet.dtype, self.device
        x = torch.zeros(batch, c, num_frames, height // f, width // f, dtype=dtype, device=device)
        cond, uncond = self.encode_prompt("", device, num_videos, guided)
        context = cond if uncond is None else torch.cat([uncond, cond])  # (batch, 77, D), as the loop's
        seconds = {}
        with torch.no_grad():
            with self.running(self.unet) as unet:
                start = time.perf_counter()
                unet(x, torch.tensor(999, device=device), context,
                     timestep_cond=self.guidance_condition(guidance_scale, batch))
                seconds["unet"] = time.perf_counter() - start
            if self.vae is not None:
                start = time.perf_counter()
                self.decode_latents(x[:num_videos])
                seconds["vae"] = time.perf_counter() - start
        self.first_call_seconds = seconds
        return seconds

    def fuse_qkv_projections(self, unet=True, vae=True):
        """One matmul for each attention's q, k and v (k and v in cross-attention) in the UNet and the VAE, as
        diffusers' ``fuse_qkv_projections``: the same numbers up to float rounding (each output is the same dot
        product). A LoRA-adapted projection is refused (``t2vlab.attention.fuse_projections``); a LoRA loaded after
        fusing makes its attentions run unfused again, so the LoRA acts."""
        for model in (self.unet if unet else None, self.vae if vae else None):
            if model is not None:
                model.fuse_qkv_projections()

    def unfuse_qkv_projections(self, unet=True, vae=True):
        """Back to three projections: the fused copies are dropped, the layers' weights were never changed."""
        for model in (self.unet if unet else None, self.vae if vae else None):
            if model is not None:
                model.unfuse_qkv_projections()
