"""A toy text-to-video model trained by t2vlab itself on a synthetic world of moving shapes.

``data``: the captioned clips; ``train``: the VAE, then the UNet3D with the epsilon loss;
``evaluate``: reads colour and direction off generated videos. ``toy_checkpoint()`` is the folder of
the checkpoint shipped with the package (published layout, loadable by ``TextToVideoPipeline``).
"""

from pathlib import Path


def toy_checkpoint() -> Path:
    """The shipped toy checkpoint's folder (t2vlab/data/toy)."""
    path = Path(__file__).resolve().parent.parent / "data" / "toy"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"the toy checkpoint is missing from {path}; train it with "
                                "`python -m t2vlab.toy.train --out t2vlab/data/toy`")
    return path


def is_toy(name_or_path) -> bool:
    """Whether a checkpoint name or folder is the shipped toy checkpoint."""
    if str(name_or_path) == "toy":
        return True
    try:
        return Path(name_or_path).resolve() == toy_checkpoint()
    except (OSError, TypeError):
        return False
