"""Fixtures shared by the unit tests (tests/test_*.py) and the parity tests (tests/parity/).

Nothing here needs diffusers: fixtures written by a reference implementation live beside the parity
tests that use them.
"""

from __future__ import annotations

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's duration (``pytestmark = pytest.mark.usefixtures("one_thread")``).
    Tiny tensors gain nothing from threads, and on a shared 2-core machine two OpenMP threads spinning
    against other jobs made one call 40x slower (12 s against 0.3 s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
