"""Fixtures shared by the unit tests (tests/test_*.py) and the parity tests (tests/parity/).

Nothing here needs diffusers: fixtures written by a reference implementation live beside the parity
tests that use them.
"""

from __future__ import annotations

import pytest

from t2vlab.text import Tokenizer
from t2vlab.weights import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny checkpoint in the published layout (random weights) with its fp16 variant. Tests copy it
    before changing anything; a module that needs a different one defines its own ``tiny``."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tok():
    """The CLIP tokenizer with its real vocabulary."""
    return Tokenizer.default()
