"""t2vlab: ModelScope text-to-video (damo-vilab/text-to-video-ms-1.7b) rebuilt from scratch in PyTorch.

Public names are imported lazily (on first use), so ``import t2vlab`` is quick and a notebook
that needs only the tokenizer does not pay for the whole model.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "UNet3DConditionModel": "t2vlab.unet",
    "AutoencoderKL": "t2vlab.vae",
    "Tokenizer": "t2vlab.tokenizer",
    "CLIPTextEncoder": "t2vlab.text_encoder",
    "DDIMScheduler": "t2vlab.schedulers",
    "DDPMScheduler": "t2vlab.schedulers",
    "DPMSolverMultistepScheduler": "t2vlab.schedulers",
    "EulerDiscreteScheduler": "t2vlab.schedulers",
    "EulerAncestralDiscreteScheduler": "t2vlab.schedulers",
    "PNDMScheduler": "t2vlab.schedulers",
    "LMSDiscreteScheduler": "t2vlab.schedulers",
    "LCMScheduler": "t2vlab.schedulers",
    "TextToVideoPipeline": "t2vlab.pipeline",
    "TextToVideoOutput": "t2vlab.pipeline",
    "VideoToVideoPipeline": "t2vlab.video_to_video",
    "OutOfMemoryError": "t2vlab.guards",
    "CheckpointError": "t2vlab.checkpoint",
    "capture_attention": "t2vlab.unet",
    "frames_to_batch": "t2vlab.frames",
    "batch_to_frames": "t2vlab.frames",
    "export_to_video": "t2vlab.video",
    "make_tiny_checkpoint": "t2vlab.weights",
    "toy_checkpoint": "t2vlab.weights",
    "tiny_checkpoint": "t2vlab.weights",
    "recommended_settings": "t2vlab.weights",
    "free_init_filter": "t2vlab.techniques.free_init",
    "convert_original": "t2vlab.original",
    "write_original": "t2vlab.original",
    "make_tiny_original_checkpoint": "t2vlab.original",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 't2vlab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
