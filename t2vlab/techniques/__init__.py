"""Techniques: one paper per module, each a small named change to sampling or to the network.

- ``free_noise``     FreeNoise (Qiu et al., 2023): rescheduled noise and window-fused temporal attention
- ``free_init``      FreeInit (Wu et al., 2023): several sampling passes, each from the last one's low frequencies
- ``freeu``          FreeU (Si et al., 2023): the up levels re-weigh backbone and skip
- ``deepcache``      DeepCache (Ma et al., 2023): deep features reused between neighbouring steps
- ``prompt_travel``  a text per frame, interpolated between keyframes
- ``keyframes``      frames held to given images or latents while sampling, with a strength each and a schedule
                     over the steps (image-to-video's first-frame anchor is the one-keyframe case)
- ``repaint``        RePaint (Lugmayr et al., 2022): each step taken U times, noised back between, so the free
                     frames agree with the held ones (``keyframe_resample=U``, an option of the loop)
- ``continuation``   a video made longer chunk by chunk, each chunk's first frames held to the last ones (``extend``)
- ``loops``          the time axis a circle: temporal convolutions padded circularly (``loop=True``)
- ``interpolation``  in-between frames: the given frames held at every factor-th position (``interpolate``)
- ``prompt_weighting`` weighted prompts (sd-webui's and compel's syntaxes, each with its rule) and long prompts
                     (chunks of 75 tokens, A1111's rule)
- ``consistency``    consistency models (Song et al., 2023; LCM, Luo et al., 2023): the boundary condition and the
                     guidance-scale embedding of distilled checkpoints (sampled by ``schedulers.LCMScheduler``)

A technique imports nothing of the models: it takes the network or the pipeline as an argument. The
network shows only the hook point a technique uses (a ``windows``, ``freeu``, ``deepcache`` or ``circular`` attribute),
the pipeline only its switches (``pipe.enable_*`` / ``disable_*``); switched off, every number is the
plain one.
"""
