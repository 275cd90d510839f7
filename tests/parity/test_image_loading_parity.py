"""An image file as t2vlab reads it (``t2vlab.inputs.image_input``) against diffusers' ``load_image``: the same
pixels, exactly, for photos whose EXIF orientation says to turn them (both apply ``PIL.ImageOps.exif_transpose``
before converting to RGB). Exact equality: both decode the same file with the same Pillow, and ours only divides
the uint8 pixels by 255 (in float32, as here).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2vlab.inputs import image_input

pytest.importorskip("diffusers")
from diffusers.utils import load_image  # noqa: E402


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_an_image_file_reads_as_diffusers_load_image_reads_it(tmp_path, orientation, fmt):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = orientation  # 1: as stored; 2-8: mirrored and/or turned
    path = tmp_path / f"photo.{fmt}"
    img.save(path, exif=exif)
    theirs = np.asarray(load_image(str(path)))
    assert theirs.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))  # 5-8 swap height and width
    assert np.array_equal(image_input(path), theirs.astype(np.float32) / 255.0)
