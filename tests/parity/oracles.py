"""The reference implementations of the original format, loaded as test oracles.

- ModelScope's ``unet_sd.py`` and ``autoencoder.py`` (they import only torch and einops) are loaded
  straight from the installed ``modelscope`` wheel's files: importing the ``modelscope`` package itself
  pulls in heavy dependencies we do not need.
- open_clip's ``model.py`` (CLIP and its text and vision towers) and ``tokenizer.py`` are loaded from the
  installed ``open-clip-torch`` files under a private package name. Its package ``__init__`` imports
  torchvision for image transforms, and a torchvision wheel built for another torch (PyPI's CUDA
  torchvision beside the CPU build of torch) fails to import; only ``utils.py`` needs torchvision, for
  ``FrozenBatchNorm2d`` (freezing ResNet image towers, never used here), so when the real torchvision
  cannot be imported a stand-in for that one name is used while open_clip's files load.

Each function skips the calling test module (``pytest.skip``) when its oracle is not installed: the
same effect as ``pytest.importorskip``, which cannot be used because it would import the packages.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import pytest


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _load_file(module_name: str, path: Path):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def modelscope_video_synthesis():
    """(unet_sd, autoencoder): ModelScope's own modules, from the modelscope 1.40.2 wheel's files."""
    pytest.importorskip("einops")
    root = _package_dir("modelscope")
    if root is None:
        pytest.skip("modelscope (the test-only oracle) is not installed", allow_module_level=True)
    folder = root / "models" / "multi_modal" / "video_synthesis"
    return (_load_file("_oracle_modelscope_unet_sd", folder / "unet_sd.py"),
            _load_file("_oracle_modelscope_autoencoder", folder / "autoencoder.py"))


@functools.cache
def open_clip_files():
    """(model, tokenizer): open_clip's model.py and tokenizer.py, loaded without its package __init__."""
    pytest.importorskip("ftfy")  # open_clip's tokenizer cleans text with it
    root = _package_dir("open_clip")
    if root is None:
        pytest.skip("open-clip-torch (the test-only oracle) is not installed", allow_module_level=True)
    package = types.ModuleType("_oracle_open_clip")
    package.__path__ = [str(root)]
    sys.modules["_oracle_open_clip"] = package
    stand_in = {}
    try:
        import torchvision.ops.misc  # noqa: F401
    except Exception:  # missing, or built for another torch: give utils.py the one name it imports
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
        stand_in = {"torchvision": types.ModuleType("torchvision"), "torchvision.ops": types.ModuleType(
            "torchvision.ops"), "torchvision.ops.misc": misc}
    saved = {k: sys.modules.get(k) for k in stand_in}
    sys.modules.update(stand_in)
    try:  # only utils.py imports torchvision
        importlib.import_module("_oracle_open_clip.utils")
    finally:
        for k, v in saved.items():  # the stand-in never outlives that one import
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return importlib.import_module("_oracle_open_clip.model"), importlib.import_module("_oracle_open_clip.tokenizer")
