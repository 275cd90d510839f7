"""Techniques: one paper per module, each a small named change to sampling or to the network.

- ``free_noise``     FreeNoise (Qiu et al., 2023): rescheduled noise and window-fused temporal attention
- ``free_init``      FreeInit (Wu et al., 2023): several sampling passes, each from the last one's low frequencies
- ``freeu``          FreeU (Si et al., 2023): the up levels re-weigh backbone and skip
- ``deepcache``      DeepCache (Ma et al., 2023): deep features reused between neighbouring steps
- ``prompt_travel``  a text per frame, interpolated between keyframes
- ``keyframes``      frames held to given latents while sampling (image-to-video's first-frame anchor)
- ``prompt_weighting`` weighted prompts (sd-webui's and compel's syntaxes, each with its rule) and long prompts
                     (chunks of 75 tokens, A1111's rule)
- ``consistency``    consistency models (Song et al., 2023; LCM, Luo et al., 2023): the boundary condition and the
                     guidance-scale embedding of distilled checkpoints (sampled by ``schedulers.LCMScheduler``)

A technique imports nothing of the models: it takes the network or the pipeline as an argument. The
network shows only the hook point a technique uses (a ``windows``, ``freeu`` or ``deepcache`` attribute),
the pipeline only its switches (``pipe.enable_*`` / ``disable_*``); switched off, every number is the
plain one.
"""
